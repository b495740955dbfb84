"""Load the model to prune (hub id, local dir or the embedded tiny model) and name it for caches."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from gradprune.errors import ModelError
from gradprune.recipe import ModelSection

EMBEDDED = "embedded"
_WEIGHT_SUFFIXES = (".safetensors", ".json", ".bin", ".pt", ".pth")
_OFFLINE_HINT = (
    "it is not in the local Hugging Face cache and cannot be downloaded here "
    "(HF_HUB_OFFLINE=1 or no network); download it where there is network "
    "(`hf download {name}`), or point model.name_or_path at a local directory"
)


def _looks_like_path(name: str) -> bool:
    """A hub id is ``name`` or ``org/name``; anything else with path syntax is meant as a directory."""
    return (
        name.startswith(("/", "./", "../", "~", "\\"))
        or name.count("/") > 1
        or Path(name).expanduser().exists()
    )


def resolve_model_path(name_or_path: str) -> str:
    """``embedded`` -> the shipped tiny model's dir; a local dir -> its absolute path; else a hub id."""
    if name_or_path == EMBEDDED:
        try:
            from gradprune.assets import MODEL_DIR
        except ImportError as exc:
            raise ModelError(f"the embedded model is not available (gradprune.assets: {exc})") from None
        path = Path(MODEL_DIR)
        if not path.is_dir():
            raise ModelError(f"the embedded model directory {str(path)!r} is missing; run `make assets`")
        return str(path)
    if _looks_like_path(name_or_path):
        path = Path(name_or_path).expanduser()
        if not path.exists():
            raise ModelError(f"model.name_or_path: local directory {name_or_path!r} does not exist")
        if not path.is_dir():
            raise ModelError(f"model.name_or_path: {name_or_path!r} is a file; expected a model directory")
        return str(path.resolve())
    return name_or_path


def torch_dtype(name: str) -> Any:
    import torch

    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]


def _load_config(path: str, section: ModelSection) -> Any:
    """The model config, with missing/offline/unsupported cases turned into ModelErrors."""
    from transformers import AutoConfig

    if Path(path).is_dir() and not (Path(path) / "config.json").is_file():
        raise ModelError(f"model directory {path!r} has no config.json; expected a saved transformers model")
    try:
        return AutoConfig.from_pretrained(
            path, revision=section.revision, trust_remote_code=section.trust_remote_code
        )
    except OSError as exc:
        if Path(path).is_dir():
            raise ModelError(f"cannot read the config of {path!r}: {exc}") from None
        raise ModelError(f"model {path!r}: {_OFFLINE_HINT.format(name=path)} ({exc})") from None
    except ValueError as exc:  # unknown model_type, remote code refused, ...
        raise ModelError(f"model {path!r}: {exc}") from None


def _check_causal_lm(path: str, config: Any) -> None:
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    if config.model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        raise ModelError(
            f"model {path!r} (model_type {config.model_type!r}) is not a causal language model; "
            "expected a decoder-only LM such as llama, mistral or qwen2"
        )


def _one_line(exc: BaseException, limit: int = 300) -> str:
    """An exception's text on one line, shortened: library errors can span pages (transformers' load report)."""
    text = " ".join(line.strip() for line in str(exc).splitlines() if line.strip()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _check_not_pruned_checkpoint(path: str) -> None:
    """A pruned checkpoint with per-layer shapes cannot be loaded by ``from_pretrained``: say so up front.

    (When every layer keeps the same counts ``save_pruned`` rewrites config.json and loading works.)
    """
    from gradprune.models.pruned_files import MANIFEST

    manifest = Path(path) / MANIFEST
    if not manifest.is_file():
        return
    try:
        rewritten = bool(json.loads(manifest.read_text(encoding="utf-8")).get("config_rewritten"))
    except (OSError, UnicodeDecodeError, ValueError, AttributeError):
        rewritten = False
    if not rewritten:
        raise ModelError(
            f"model.name_or_path: {path!r} is a pruned checkpoint whose layers differ in shape ({MANIFEST}); "
            "transformers cannot load it: use gradprune.load_pruned() in Python, or point model.name_or_path "
            "at the dense model")


def _owned_host_memory() -> dict[str, Any]:
    """``from_pretrained`` kwargs that give CPU weights memory of their own instead of views of the mmap'd
    safetensors file: surgery replaces each cut weight, and a view would keep the original's file pages
    resident beside the copy (measured: +6 layers' worth at the end of a 0.5 B model's surgery, not one)."""
    import inspect

    from transformers import PreTrainedModel

    params = inspect.signature(PreTrainedModel.from_pretrained).parameters
    return {"disable_mmap": True} if "disable_mmap" in params else {}


def checked_config(section: ModelSection) -> tuple[str, Any]:
    """The resolved path and config of ``section``'s model, checked before any weight is read: a causal LM
    of a supported architecture, not a pruned checkpoint transformers cannot load."""
    from gradprune.models.adapters import get_adapter

    path = resolve_model_path(section.name_or_path)
    config = _load_config(path, section)
    _check_causal_lm(path, config)
    get_adapter(config)  # unsupported architecture: fail before reading gigabytes of weights
    _check_not_pruned_checkpoint(path)
    return path, config


def load_tokenizer(path: str, section: ModelSection) -> Any:
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(path, revision=section.revision,
                                             trust_remote_code=section.trust_remote_code)
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot load the tokenizer of {path!r}: {_one_line(exc)}") from None


def load_model(section: ModelSection, device: Any = "cpu") -> tuple[Any, Any]:
    """Load model and tokenizer for pruning onto ``device``; every user-caused failure is a ModelError.

    On an accelerator the safetensors shards are read straight onto it (``device_map``), so no full
    host copy of the weights is made.
    """
    import torch
    from transformers import AutoModelForCausalLM

    path, config = checked_config(section)
    common = {"revision": section.revision, "trust_remote_code": section.trust_remote_code}
    device = torch.device(device)
    placement = {"device_map": str(device)} if device.type != "cpu" else _owned_host_memory()
    try:
        # use_safetensors=True: a pickled pytorch_model.bin is never unpickled (it could run code)
        model = AutoModelForCausalLM.from_pretrained(
            path, config=config, dtype=torch_dtype(section.dtype), use_safetensors=True, **placement, **common
        )
    except OSError as exc:
        if Path(path).is_dir():
            raise ModelError(f"cannot load safetensors weights from {path!r} (only *.safetensors files are "
                             f"read, never pickled *.bin): {_one_line(exc)}") from None
        raise ModelError(f"model {path!r}: {_OFFLINE_HINT.format(name=path)} ({exc})") from None
    except Exception as exc:  # corrupt/truncated safetensors (SafetensorError), shapes unlike config.json, ...
        if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError":
            raise  # not the user's files: a search records it as such
        raise ModelError(f"cannot load the weights of {path!r}: {type(exc).__name__}: {_one_line(exc)}; "
                         "expected model*.safetensors files that match its config.json") from None
    tokenizer = load_tokenizer(path, section)
    if "device_map" not in placement:
        model.to(device)
    model.eval()
    return model, tokenizer


def _local_fingerprint(path: Path) -> str:
    """Hash of config.json's content and the weight files' names, sizes and mtimes (cheap, no reads)."""
    h = hashlib.sha256()
    config = path / "config.json"
    if config.is_file():
        h.update(config.read_bytes())
    for f in sorted(path.iterdir()):
        if f.is_file() and f.name.endswith(_WEIGHT_SUFFIXES) and f.name != "config.json":
            st = f.stat()
            h.update(json.dumps([f.name, st.st_size, st.st_mtime_ns]).encode())
    return h.hexdigest()[:16]


def model_identity(section: ModelSection, model: Any = None) -> str:
    """A stable string naming the dense weights and dtype, for cache keys (the stored calibrations' and
    the dense metrics'); compute it when the model is loaded, before pruning.

    Local dirs (and ``embedded``) add a fingerprint of their files, so an overwritten checkpoint
    gets a new identity; hub ids add the revision and, when known, the resolved commit.
    """
    path = resolve_model_path(section.name_or_path)
    parts = [section.name_or_path]
    if Path(path).is_dir():
        parts.append(f"sha256:{_local_fingerprint(Path(path))}")
    else:
        parts.append(f"rev:{section.revision or 'main'}")
        commit = getattr(getattr(model, "config", None), "_commit_hash", None)
        if commit:
            parts.append(f"commit:{commit}")
    parts.append(f"dtype:{section.dtype}")
    return "|".join(parts)
