"""Save and reload pruned models: safetensors + config + plan.json, never pickle.

Layers of a pruned model have different shapes, which a transformers config cannot describe and
``from_pretrained`` refuses (``ignore_mismatched_sizes`` would silently re-initialise them). So a pruned
checkpoint keeps the dense config in ``gradprune_checkpoint.json`` beside the plan; ``load_pruned`` builds
the dense skeleton with parameters on the meta device, cuts it with the plan and assigns the saved
tensors. When every layer keeps the same counts, ``config.json`` is also rewritten to the pruned
shapes so that plain ``AutoModelForCausalLM.from_pretrained`` loads the directory too.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from gradprune.cut.surgery import apply_plan, check_block
from gradprune.errors import ModelError, PlanError
from gradprune.models.adapters import get_adapter
from gradprune.models.pruned_files import MANIFEST
from gradprune.models.shard_loading import params_on_meta
from gradprune.pruning.plan import Plan

PLAN_FILE = "plan.json"
FORMAT_VERSION = 1


def check_model_matches_plan(model: nn.Module, plan: Plan) -> None:
    """The plan fits the model's (dense) config and the model's current shapes are the plan's."""
    config = model.config
    layers = get_adapter(model).layers(model)
    if plan.model_type != config.model_type:
        raise PlanError(f"plan is for model_type {plan.model_type!r}, the model is {config.model_type!r}")
    plan.check_unique_layers()
    for lp in plan.layers:
        if lp.layer >= len(layers):
            raise PlanError(f"plan layer {lp.layer} out of range: the model has {len(layers)} layers")
        # indices refer to the dense model, which the config still describes
        check_block(lp.attn_kept, config.num_key_value_heads, "attn_kept", lp.layer)
        check_block(lp.mlp_kept, config.intermediate_size, "mlp_kept", lp.layer)
    expected = plan.kept_counts(config)
    for lm, (n_kv, n_ch) in zip(layers, expected, strict=True):
        if (lm.n_kv, lm.n_channels) != (n_kv, n_ch):
            raise PlanError(
                f"layer {lm.index} has {lm.n_kv} KV groups and {lm.n_channels} MLP channels, the plan keeps "
                f"{n_kv} and {n_ch}: apply_plan(model, plan) must run before save_pruned with the same plan"
            )


def pruned_config(dense: dict[str, Any], plan: Plan, model_config: Any) -> tuple[dict[str, Any] | None, str]:
    """The dense config rewritten to a uniform plan's shapes, or (None, why it cannot be)."""
    if not plan.is_uniform(model_config):
        return None, "layers keep different numbers of KV groups or MLP channels"
    n_kv, n_ch = plan.kept_counts(model_config)[0]
    if n_kv == 0 or n_ch == 0:
        return None, "no KV group or no MLP channel is kept (transformers divides by num_key_value_heads)"
    head_dim = dense.get("head_dim") or dense["hidden_size"] // dense["num_attention_heads"]
    n_rep = dense["num_attention_heads"] // dense["num_key_value_heads"]
    rewritten = {
        **dense,
        "intermediate_size": n_ch,
        "num_key_value_heads": n_kv,
        "num_attention_heads": n_kv * n_rep,
        "head_dim": head_dim,  # explicit: hidden_size // num_attention_heads no longer gives it
    }
    from transformers import CONFIG_MAPPING

    try:
        # transformers 5 validates configs strictly (LlamaConfig wants hidden_size % num_attention_heads
        # == 0 even with an explicit head_dim): let it decide, and fall back to the plan-based load.
        CONFIG_MAPPING[dense["model_type"]].from_dict(rewritten)
    except Exception as exc:  # any refusal only means "not loadable by from_pretrained"
        return None, f"transformers rejects the pruned config: {str(exc).strip().splitlines()[-1]}"
    return rewritten, ""


def _buffer_dtypes(model: nn.Module) -> dict[str, str]:
    """dtypes of the non-persistent buffers: ``model.to(bf16)`` casts the rotary ``inv_freq`` too,
    while a fresh build computes it in fp32; recording them keeps the reload bitwise exact."""
    persistent = set(model.state_dict())
    return {n: str(b.dtype).removeprefix("torch.") for n, b in model.named_buffers() if n not in persistent}


def _restore_buffer_dtypes(model: nn.Module, dtypes: Any) -> None:
    if not isinstance(dtypes, dict):
        return
    buffers = dict(model.named_buffers())
    for name, dtype_name in dtypes.items():
        dtype = getattr(torch, str(dtype_name), None)
        if name in buffers and isinstance(dtype, torch.dtype):
            module_name, _, attr = name.rpartition(".")
            model.get_submodule(module_name).register_buffer(attr, buffers[name].to(dtype), persistent=False)


def _check_target(out_dir: Path) -> None:
    """Only an empty dir or an earlier pruned checkpoint may be replaced (never a user's other files)."""
    if not out_dir.exists():
        return
    if not out_dir.is_dir():
        raise ModelError(f"cannot save the pruned model to {str(out_dir)!r}: it is a file")
    if any(out_dir.iterdir()) and not (out_dir / MANIFEST).is_file():
        raise ModelError(
            f"cannot save the pruned model to {str(out_dir)!r}: the directory is not empty and is not "
            "a pruned checkpoint; choose another directory"
        )


def _fsync_tree(folder: Path) -> None:
    """Flush every file (and the folder) to disk, so that after the rename a power loss cannot leave a
    checkpoint whose names are in place but whose contents are not (gradprune.files does the same per file)."""
    for f in folder.rglob("*"):
        if f.is_file():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _move_into_place(tmp: Path, out_dir: Path) -> None:
    _fsync_tree(tmp)
    if out_dir.exists():
        old = out_dir.with_name(f".{out_dir.name}.old-{uuid.uuid4().hex[:8]}")
        os.replace(out_dir, old)
        os.replace(tmp, out_dir)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out_dir)


def save_pruned(model: nn.Module, tokenizer: Any, plan: Plan, out_dir: str | Path,
                extras: Callable[[Path], dict[str, Any]] | None = None) -> Path:
    """Save a model cut by ``plan`` (config, safetensors, tokenizer, plan.json); atomic per directory.

    ``extras(folder)``: writes more files into the checkpoint before it is moved into place (a recovery's
    adapter, :mod:`gradprune.cut.recovered`) and returns entries for the manifest."""
    out_dir = Path(out_dir)
    check_model_matches_plan(model, plan)
    _check_target(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        model.save_pretrained(tmp)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        plan.save(tmp / PLAN_FILE)
        dense = json.loads((tmp / "config.json").read_text(encoding="utf-8"))
        rewritten, why_not = pruned_config(dense, plan, model.config)
        if rewritten is not None:
            (tmp / "config.json").write_text(json.dumps(rewritten, indent=2, sort_keys=True) + "\n")
        manifest = {
            "format_version": FORMAT_VERSION,
            "config_rewritten": rewritten is not None,
            "config_not_rewritten_because": why_not or None,
            "dense_config": dense,
            "buffer_dtypes": _buffer_dtypes(model),
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
        if extras is not None:  # the folder is a whole checkpoint already: extras may load it
            manifest.update(extras(tmp))
            (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
        _move_into_place(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir



def _read_manifest(path: Path) -> dict[str, Any]:
    if not path.is_dir():
        raise ModelError(f"pruned checkpoint {str(path)!r} is not a directory")
    manifest_file = path / MANIFEST
    if not manifest_file.is_file():
        if (path / "model" / MANIFEST).is_file():  # a run's output.dir, which holds the model in model/
            raise ModelError(
                f"{str(path)!r} is a run's output directory, not a pruned checkpoint: "
                f"load {str(path / 'model')!r} instead"
            )
        raise ModelError(f"{str(path)!r} is not a pruned checkpoint: {MANIFEST} is missing (see save_pruned)")
    try:
        manifest = json.loads(manifest_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"{str(manifest_file)!r} is not readable JSON: {exc}") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("dense_config"), dict):
        raise ModelError(f"{str(manifest_file)!r}: expected an object with a 'dense_config' object")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise ModelError(
            f"{str(manifest_file)!r}: format_version {manifest.get('format_version')!r} is not supported"
        )
    return manifest


def _dense_config(d: dict[str, Any], source: str) -> Any:
    from transformers import CONFIG_MAPPING

    get_adapter(d)  # unsupported model_type -> ModelError naming the supported ones
    try:
        return CONFIG_MAPPING[d["model_type"]].from_dict(d)
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelError(f"{source}: the dense config cannot be built: {exc}") from None


def _weight_files(path: Path) -> list[Path]:
    """The safetensors files of a checkpoint: one file or the shards named by the index."""
    single = path / "model.safetensors"
    if single.is_file():
        return [single]
    index = path / "model.safetensors.index.json"
    if not index.is_file():
        raise ModelError(f"pruned checkpoint {str(path)!r} has no model.safetensors (or sharded index)")
    try:
        weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        return [path / name for name in sorted(set(weight_map.values()))]
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ModelError(f"{str(index)!r} is not a valid safetensors index: {exc}") from None


def _read_tensors(files: list[Path], device: str, dtype: torch.dtype | None) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    tensors: dict[str, torch.Tensor] = {}
    for f in files:
        try:
            part = load_file(f, device=str(device))
        except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
            raise ModelError(f"cannot read weights file {str(f)!r} (corrupt or truncated?): {exc}") from None
        for name, t in part.items():
            tensors[name] = t.to(dtype) if dtype is not None and t.is_floating_point() else t
    return tensors


def _assign_weights(model: nn.Module, tensors: dict[str, torch.Tensor], source: str) -> None:
    """Check names and shapes against the cut skeleton, then assign the tensors (no copy)."""
    expected = model.state_dict()
    tied = set(getattr(model, "all_tied_weights_keys", None) or {})
    for name, t in tensors.items():
        if name not in expected:
            raise ModelError(f"{source}: unexpected tensor {name!r} in the weights (not in the model)")
        if tuple(t.shape) != tuple(expected[name].shape):
            raise PlanError(
                f"{source}: {name} has shape {list(t.shape)} in the weights but {list(expected[name].shape)} "
                f"after applying {PLAN_FILE}: the plan does not match the saved weights"
            )
    missing = [n for n in expected if n not in tensors and n not in tied]
    if missing:
        raise ModelError(f"{source}: the weights lack {len(missing)} tensor(s), e.g. {missing[:3]}")
    model.load_state_dict(tensors, strict=False, assign=True)
    if tied:
        model.tie_weights()
    left = [n for n, p in model.named_parameters() if p.device.type == "meta"]
    if left:
        raise ModelError(f"{source}: parameters not restored from the weights: {left[:3]}")


def load_pruned(
    path: str | Path, device: str = "cpu", dtype: torch.dtype | str | None = None, recovered: bool = True,
    merge: bool = True,
) -> tuple[nn.Module, Any, Plan]:
    """Rebuild a model saved by ``save_pruned``: dense skeleton on meta, plan applied, tensors assigned.

    A checkpoint saved after recovery gives the recovered model (``recovered=False``: the untuned one): its
    merged checkpoint when saved, else the adapter merged on load (``merge=False``: a ``peft.PeftModel``).
    ``model.gradprune_recovery["state"]`` says which: ``"untuned"`` or ``"recovered"``."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    from gradprune.cut.recovered import apply_recovery, merged_checkpoint

    path = Path(path)
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype)
    manifest = _read_manifest(path)
    if recovered and merge and (merged := merged_checkpoint(path, manifest)) is not None:
        return load_pruned(merged, device, dtype)
    plan = Plan.load(path / PLAN_FILE)
    config = _dense_config(manifest["dense_config"], str(path / MANIFEST))
    files = _weight_files(path)
    build_dtype = dtype or getattr(config, "dtype", None) or torch.float32
    with params_on_meta():
        model = AutoModelForCausalLM.from_config(config, dtype=build_dtype)
    try:
        apply_plan(model, plan)
    except PlanError as exc:
        raise PlanError(f"{str(path / PLAN_FILE)!r} does not fit the saved config: {exc}") from None
    _assign_weights(model, _read_tensors(files, device, dtype), str(path))
    if dtype is None:  # an explicit dtype follows from_pretrained: computed buffers stay fp32
        _restore_buffer_dtypes(model, manifest.get("buffer_dtypes"))
    if (path / "generation_config.json").is_file():
        model.generation_config = GenerationConfig.from_pretrained(path)
    model.to(device)
    model.eval()
    tokenizer = None
    if any((path / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")):
        tokenizer = AutoTokenizer.from_pretrained(path)
    return apply_recovery(model, path, manifest, recovered, merge), tokenizer, plan
