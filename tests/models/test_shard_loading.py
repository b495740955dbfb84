"""FSDP loading pieces that need no process group: the meta model, the checkpoint index, the fallback."""

from __future__ import annotations

import torch
from safetensors.torch import load_file, save_file

from gradprune.models.shard_loading import index_checkpoint, load_empty, mismatch
from gradprune.recipe import ModelSection


def test_load_empty_builds_on_meta_with_real_buffers(model_dir):
    model, tok, index, why = load_empty(ModelSection(name_or_path=str(model_dir)))
    assert why == "" and tok is not None
    assert all(p.is_meta for p in model.parameters())
    assert all(not b.is_meta for b in model.buffers())  # the rotary inv_freq is computed, not stored
    assert not model.training
    state = load_file(str(model_dir / "model.safetensors"))
    assert set(index.files) == set(state)
    assert index.shapes["model.embed_tokens.weight"] == tuple(state["model.embed_tokens.weight"].shape)


def test_a_checkpoint_whose_names_differ_falls_back_with_the_reason(model_dir, tmp_path):
    import shutil

    d = tmp_path / "renamed"
    shutil.copytree(model_dir, d)
    state = load_file(str(d / "model.safetensors"))
    state["model.layers.0.mlp.up.weight"] = state.pop("model.layers.0.mlp.up_proj.weight")
    save_file(state, str(d / "model.safetensors"))
    model, tok, index, why = load_empty(ModelSection(name_or_path=str(d)))
    assert model is None and index is None
    assert "model.layers.0.mlp.up_proj.weight" in why


def test_a_shape_mismatch_is_named(model_dir):
    model, _, index, _ = load_empty(ModelSection(name_or_path=str(model_dir)))
    bad = type(index)(index.directory, index.files, dict(index.shapes, **{"model.norm.weight": (1, 1)}))
    assert mismatch(model, index) is None
    assert "'model.norm.weight' is [1, 1] in the checkpoint" in mismatch(model, bad)


def test_no_safetensors_files_means_no_index(tmp_path):
    assert index_checkpoint(tmp_path) is None
    torch.save({}, tmp_path / "x.pt")
    assert index_checkpoint(tmp_path) is None
