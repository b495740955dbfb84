"""FSDP loading: every rank builds the model on the meta device and reads only its own rows of each weight.

Without this each process would first hold the whole checkpoint in host memory (one full model per rank)
before ``fully_shard`` cut it to 1/N. Here:

1. ``empty_model`` builds the model from its config with parameters on the meta device (no memory) and
   real buffers (the rotary ``inv_freq`` is computed in ``__init__``, not stored), and indexes the
   checkpoint's safetensors files (headers only: names, shapes);
2. after ``fully_shard`` each parameter is a DTensor sharded on dim 0; ``load_local_shards`` allocates
   just the local shard (``to_empty``) and fills it with ``safe_open(...).get_slice(name)[start:stop]``,
   which reads those rows from the file and nothing else.

Only safetensors checkpoints whose tensor names and shapes match the model's parameters are read this way;
``mismatch`` says why another one is not (the caller then loads the full model as for one process).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from gradprune.errors import ModelError
from gradprune.recipe import ModelSection


@contextlib.contextmanager
def params_on_meta() -> Iterator[None]:
    """Build modules with parameters on the meta device but real buffers.

    Buffers such as the rotary ``inv_freq`` are non-persistent (not in the checkpoint) and computed in
    ``__init__``: keeping them real restores them exactly, while no parameter memory is allocated.
    """
    register = nn.Module.register_parameter

    def register_on_meta(module: nn.Module, name: str, param: nn.Parameter | None) -> None:
        if param is not None and param.device.type != "meta":
            param = type(param)(param.to("meta"), requires_grad=param.requires_grad)
        register(module, name, param)

    nn.Module.register_parameter = register_on_meta  # type: ignore[method-assign]
    try:
        yield
    finally:
        nn.Module.register_parameter = register  # type: ignore[method-assign]


@dataclass(frozen=True)
class CheckpointIndex:
    """Where each tensor of a safetensors checkpoint is, and its shape (read from the file headers)."""

    directory: str
    files: dict[str, str]  # tensor name -> file path
    shapes: dict[str, tuple[int, ...]]


def checkpoint_dir(path: str, section: ModelSection) -> Path | None:
    """The local directory holding ``path``'s safetensors files: ``path`` itself, or the hub snapshot
    (from the cache when offline); None when there is none to read."""
    if Path(path).is_dir():
        return Path(path)
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(path, revision=section.revision, allow_patterns=["*.safetensors", "*.json"]))
    except Exception:  # offline and not cached, gated, ...: the full load reports it properly
        return None


def index_checkpoint(directory: Path) -> CheckpointIndex | None:
    """The tensors of ``directory``'s ``*.safetensors`` files (None: there are none)."""
    from safetensors import safe_open

    files = sorted(directory.glob("*.safetensors"))
    if not files:
        return None
    where: dict[str, str] = {}
    shapes: dict[str, tuple[int, ...]] = {}
    for f in files:
        with safe_open(str(f), framework="pt") as sf:
            for name in sf.keys():  # noqa: SIM118 (a safetensors handle is not iterable)
                where[name] = str(f)
                shapes[name] = tuple(sf.get_slice(name).get_shape())
    return CheckpointIndex(str(directory), where, shapes)


def empty_model(path: str, config: Any, section: ModelSection) -> nn.Module:
    """The model of ``config`` with parameters on the meta device and real buffers, in eval mode."""
    from transformers import AutoModelForCausalLM, GenerationConfig

    from gradprune.models.loading import torch_dtype

    with params_on_meta():
        model = AutoModelForCausalLM.from_config(config, dtype=torch_dtype(section.dtype),
                                                 trust_remote_code=section.trust_remote_code)
    with contextlib.suppress(OSError, ValueError):  # no generation_config.json: the config's defaults
        model.generation_config = GenerationConfig.from_pretrained(path, revision=section.revision)
    return model.eval()


def mismatch(model: nn.Module, index: CheckpointIndex) -> str | None:
    """Why ``index`` cannot fill ``model`` tensor by tensor (None: it can)."""
    for name, p in model.named_parameters():
        if name not in index.shapes:
            return f"the checkpoint has no tensor {name!r} (its names differ from the model's)"
        if index.shapes[name] != tuple(p.shape):
            return f"tensor {name!r} is {list(index.shapes[name])} in the checkpoint, {list(p.shape)} in the model"
    return None


def _local_rows(param: torch.Tensor, local: torch.Tensor) -> tuple[int, int]:
    """The rows ``[start, stop)`` of the full parameter this rank's shard holds (FSDP2: dim 0, chunked as
    ``torch.chunk`` does, the last ranks' chunks shorter or empty)."""
    from torch.distributed.tensor import DTensor, Shard

    rows = param.shape[0] if param.dim() else 0
    if not isinstance(param, DTensor) or not any(isinstance(pl, Shard) for pl in param.placements):
        return 0, rows
    (placement,) = param.placements
    if placement != Shard(0):
        raise ModelError(f"unexpected sharding {param.placements} (expected dim 0)")
    n, rank = param.device_mesh.size(), param.device_mesh.get_local_rank()
    chunk = -(-rows // n)
    start = min(rank * chunk, rows)
    stop = min(start + chunk, rows)
    if local.shape[0] != stop - start:
        raise ModelError(f"shard of {tuple(param.shape)} on rank {rank}/{n} holds {local.shape[0]} rows, "
                         f"expected {stop - start}")
    return start, stop


def load_local_shards(model: nn.Module, index: CheckpointIndex, device: torch.device) -> int:
    """Allocate this rank's shard of every parameter on ``device`` and read it from ``index``'s files;
    buffers keep the values they were built with (a stored persistent buffer is read whole). Returns the
    number of parameter elements read."""
    from safetensors import safe_open

    buffers = {name: b.detach().clone() for name, b in model.named_buffers()}
    model.to_empty(device=device)
    by_file: dict[str, list[tuple[str, torch.Tensor]]] = {}
    for name, p in model.named_parameters():
        by_file.setdefault(index.files[name], []).append((name, p))
    read = 0
    with torch.no_grad():
        for file, params in by_file.items():
            with safe_open(file, framework="pt") as sf:
                for name, p in params:
                    local = p.to_local() if hasattr(p, "to_local") else p
                    start, stop = _local_rows(p, local)
                    if stop > start or p.dim() == 0:
                        part = sf.get_slice(name)[start:stop] if p.dim() else sf.get_tensor(name)
                        local.copy_(part)
                        read += part.numel()
        for name, b in model.named_buffers():
            if name in index.files:
                with safe_open(index.files[name], framework="pt") as sf:
                    b.copy_(sf.get_tensor(name))
            elif name in buffers:
                b.copy_(buffers[name])
    return read


def load_empty(section: ModelSection) -> tuple[nn.Module | None, Any, CheckpointIndex | None, str]:
    """For FSDP: (the model on meta, its tokenizer, the checkpoint index, "") when every rank can read its
    own shards; else (None, None, None, why not) and the caller loads the full model."""
    from gradprune.models.loading import checked_config, load_tokenizer

    path, config = checked_config(section)
    directory = checkpoint_dir(path, section)
    index = index_checkpoint(directory) if directory is not None else None
    if index is None:
        return None, None, None, f"no local *.safetensors files for {section.name_or_path!r}"
    model = empty_model(path, config, section)
    why = mismatch(model, index)
    if why:
        return None, None, None, why
    return model, load_tokenizer(path, section), index, ""
