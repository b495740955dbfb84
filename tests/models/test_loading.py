"""Loading the model to prune: local dirs, the embedded model, hub ids offline, and identities."""

from __future__ import annotations

import os
import time

import pytest
import torch

from gradprune.errors import ModelError
from gradprune.models.loading import load_model, model_identity, resolve_model_path
from gradprune.recipe import ModelSection


def _tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, **{f"w{i}": i + 3 for i in range(20)}, "<unk>": 23}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>")


@pytest.fixture
def model_dir(tmp_path, make_model):
    # mistral, not qwen2: transformers 5 forces Qwen2Tokenizer on qwen2 dirs, whatever tokenizer_config says
    path = tmp_path / "tiny-mistral"
    make_model("mistral").save_pretrained(path)
    _tokenizer().save_pretrained(path)
    return path


def test_load_local_dir(model_dir, make_model, tokens):
    model, tokenizer = load_model(ModelSection(name_or_path=str(model_dir), dtype="bfloat16"))
    assert model.config.model_type == "mistral" and not model.training
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    assert tokenizer("w1 w2")["input_ids"] == [4, 5]
    fp32, _ = load_model(ModelSection(name_or_path=str(model_dir)))
    assert torch.equal(fp32(tokens).logits, make_model("mistral")(tokens).logits)


def test_embedded_resolves_to_the_assets_dir(model_dir, monkeypatch):
    import gradprune.assets

    monkeypatch.setattr(gradprune.assets, "MODEL_DIR", model_dir)
    assert resolve_model_path("embedded") == str(model_dir)
    model, _ = load_model(ModelSection())
    assert model.config.model_type == "mistral"
    monkeypatch.setattr(gradprune.assets, "MODEL_DIR", model_dir / "gone")
    with pytest.raises(ModelError, match="embedded model directory .* is missing"):
        resolve_model_path("embedded")


def test_missing_local_dir_names_the_path(tmp_path):
    missing = str(tmp_path / "no" / "such-model")
    with pytest.raises(ModelError, match=f"local directory '{missing}' does not exist"):
        load_model(ModelSection(name_or_path=missing))
    with pytest.raises(ModelError, match="does not exist"):
        resolve_model_path("./not-here")


def test_dir_without_config(tmp_path):
    with pytest.raises(ModelError, match="has no config.json"):
        load_model(ModelSection(name_or_path=str(tmp_path)))
    (tmp_path / "weights.txt").write_text("x")
    with pytest.raises(ModelError, match="is a file"):
        resolve_model_path(str(tmp_path / "weights.txt"))


def test_unsupported_and_non_causal_models(tmp_path):
    from transformers import GPT2Config, ViTConfig

    GPT2Config(n_layer=1, n_embd=32, n_head=2).save_pretrained(tmp_path / "gpt2")
    with pytest.raises(
        ModelError, match=r"model_type 'gpt2' is not supported.*supported: llama, mistral, qwen2"
    ):
        load_model(ModelSection(name_or_path=str(tmp_path / "gpt2")))
    ViTConfig(
        num_hidden_layers=1, hidden_size=32, num_attention_heads=2, intermediate_size=8
    ).save_pretrained(tmp_path / "vit")
    with pytest.raises(ModelError, match="'vit'.*not a causal language model"):
        load_model(ModelSection(name_or_path=str(tmp_path / "vit")))


def test_hub_id_offline_gives_the_hint(monkeypatch, tmp_path):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    assert resolve_model_path("some-org/not-cached-model") == "some-org/not-cached-model"
    with pytest.raises(ModelError, match="some-org/not-cached-model.*HF_HUB_OFFLINE"):
        load_model(ModelSection(name_or_path="some-org/not-cached-model"))


def test_identity_is_stable_and_tracks_files(model_dir):
    section = ModelSection(name_or_path=str(model_dir))
    first = model_identity(section)
    assert first == model_identity(section)
    assert first != model_identity(ModelSection(name_or_path=str(model_dir), dtype="bfloat16"))
    weights = model_dir / "model.safetensors"
    later = time.time() + 10
    os.utime(weights, (later, later))
    second = model_identity(section)
    assert second != first
    (model_dir / "tokenizer.json").write_text("{}")  # the tokenizer's files count too
    assert model_identity(section) != second


def test_identity_of_a_hub_id():
    section = ModelSection(name_or_path="mistralai/Mistral-7B-v0.3", revision="abc123")
    assert model_identity(section) == "mistralai/Mistral-7B-v0.3|rev:abc123|dtype:float32"


@pytest.mark.parametrize("arch", ["qwen3", "gemma2", "gemma3_text", "phi3"])
def test_validate_a_local_dir_of_each_new_architecture(arch, tmp_path, make_model, capfd):
    # preflight builds the model on the meta device from the dir's config through the adapters
    from pathlib import Path

    from transformers import Phi3Config, Phi3ForCausalLM

    from gradprune.cli import main

    if arch == "phi3":
        model = Phi3ForCausalLM(Phi3Config(vocab_size=200, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                                           num_attention_heads=8, num_key_value_heads=2, pad_token_id=0,
                                           bos_token_id=1, eos_token_id=2))
    else:
        model = make_model(arch, n_kv=4)
    model.save_pretrained(tmp_path / arch)
    _tokenizer().save_pretrained(tmp_path / arch)
    tiny = str(Path(__file__).resolve().parents[2] / "recipes/tiny.yaml")
    code = main(["validate", tiny, f"model.name_or_path={tmp_path / arch}"])
    out, err = capfd.readouterr()
    if arch == "phi3":
        assert code == 2 and "'phi3' is not supported for structured pruning: Phi-3 fuses" in err
    else:
        assert code == 0, err
        assert "preflight ok" in out
