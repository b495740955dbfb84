"""Dense-model metrics, computed once per model identity and eval settings, cached as JSON on disk.

Cache folder: ``$GRADPRUNE_CACHE/dense`` (default ``~/.cache/gradprune/dense``), one file per part
(perplexity, zero-shot) so that changing the task list does not redo perplexity. A key covers the
model identity (the caller's: :func:`gradprune.models.loading.model_identity`, computed when the model
is loaded), the model dtype, the tokenizer, the settings that change the numbers (data sets and their
file contents, seq_len, windows, tasks, task folder contents, few-shot, limit, lm-eval version) but not
the batch size. Files are written atomically; an unreadable entry is recomputed, and a cache that cannot
be written is a warning (the run goes on; preflight says so before it starts).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import warnings
from pathlib import Path
from typing import Any

CACHE_FORMAT = 1
HASH_WHOLE_FILE_BYTES = 64 * 2**20  # larger files are fingerprinted by size, mtime, head and tail


def cache_dir() -> Path:
    """``$GRADPRUNE_CACHE/dense`` (default ``~/.cache/gradprune/dense``)."""
    from gradprune.files import cache_root

    return cache_root() / "dense"


def _sha(data: bytes | str) -> str:
    return hashlib.sha256(data.encode() if isinstance(data, str) else data).hexdigest()


def file_fingerprint(path: Path) -> str:
    """sha256 of a file's bytes, or of (size, mtime, first and last MiB) for files over 64 MiB."""
    size = path.stat().st_size
    if size <= HASH_WHOLE_FILE_BYTES:
        return _sha(path.read_bytes())
    with path.open("rb") as fh:
        head = fh.read(2**20)
        fh.seek(-(2**20), os.SEEK_END)
        tail = fh.read()
    return _sha(f"{size}:{path.stat().st_mtime_ns}:".encode() + head + tail)


def dir_fingerprint(folder: Path) -> str:
    """Fingerprint of every file under ``folder`` (relative names and contents)."""
    parts = [f"{p.relative_to(folder).as_posix()}={file_fingerprint(p)}"
             for p in sorted(folder.rglob("*")) if p.is_file() and "__pycache__" not in p.parts]
    return _sha("\n".join(parts))


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """Hash of the tokenizer's full definition (fast tokenizers) or its vocabulary and special tokens."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    body = backend.to_str() if backend is not None else json.dumps(sorted(tokenizer.get_vocab().items()))
    special = json.dumps(getattr(tokenizer, "special_tokens_map", {}), sort_keys=True, default=str)
    return _sha(f"{type(tokenizer).__name__}\n{special}\n{body}")


def _ppl_settings(cfg: Any) -> dict[str, Any]:
    from gradprune.eval.perplexity import PROTOCOL
    from gradprune.eval.ppl_data import EMBEDDED, HUB_TEXTS

    data = {}
    for name in cfg.ppl_datasets:
        if name in HUB_TEXTS:
            data[name] = "hub"
        elif name == EMBEDDED:
            from gradprune.assets import PPL_PATH

            data[name] = file_fingerprint(Path(PPL_PATH))
        else:
            data[name] = file_fingerprint(Path(name).expanduser())
    return {"datasets": data, "seq_len": cfg.ppl_seq_len, "max_windows": cfg.ppl_max_windows,
            "protocol": PROTOCOL}


def _zeroshot_settings(cfg: Any) -> dict[str, Any]:
    from gradprune.eval.tasks import resolve_task_dir
    from gradprune.eval.zeroshot import lm_eval_version

    folder = resolve_task_dir(cfg.task_dir)
    return {"tasks": list(cfg.tasks), "task_dir": dir_fingerprint(folder) if folder else None,
            "num_fewshot": cfg.num_fewshot, "limit": cfg.limit, "lm_eval": lm_eval_version()}


def cache_key(identity: str, part: str, cfg: Any, model: Any, tokenizer: Any) -> tuple[str, dict]:
    """(file name stem, the parts it hashes) of one cached part (``ppl`` or ``zeroshot``)."""
    settings = _ppl_settings(cfg) if part == "ppl" else _zeroshot_settings(cfg)
    parts = {"format": CACHE_FORMAT, "identity": identity, "part": part,
             "dtype": str(getattr(model, "dtype", None)), "tokenizer": tokenizer_fingerprint(tokenizer),
             "settings": settings}
    device = _device_type(model)
    if device != "cpu":  # other kernels give other last digits: a GPU baseline is not a CPU one
        parts["device"] = device
    return f"{part}-{_sha(json.dumps(parts, sort_keys=True, default=str))[:24]}", parts


def _device_type(model: Any) -> str:
    try:
        return next(model.parameters()).device.type
    except (AttributeError, StopIteration):
        return "cpu"


def _read_entry(path: Path) -> dict | None:
    try:
        entry = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return entry if isinstance(entry, dict) and isinstance(entry.get("metrics"), dict) else None


def dense_metrics(model: Any, tokenizer: Any, cfg: Any, identity: str, console: Any = None) -> dict[str, float]:
    """The dense model's metrics for ``cfg`` (EvalSection), from the cache or evaluated and cached.

    Call it before pruning (surgery changes the model in place). ``{}`` when eval.dense is false or
    eval.run is none. The parts missing from the cache are evaluated together (one "dense model
    evaluation" block) and cached one file per part.
    """
    from gradprune.eval.evaluation import evaluate
    from gradprune.progress import print_plain

    if cfg.run == "none" or not cfg.dense:
        return {}
    parts = [p for p, want in (("ppl", cfg.run in ("all", "ppl") and cfg.ppl_datasets),
                               ("zeroshot", cfg.run in ("all", "zeroshot") and cfg.tasks)) if want]
    entries: dict[str, dict] = {}
    missing: dict[str, tuple[Path, dict]] = {}
    for part in parts:
        stem, key_parts = cache_key(identity, part, cfg.model_copy(update={"run": part}), model, tokenizer)
        path = cache_dir() / f"{stem}.json"
        entry = _read_entry(path)
        if entry is None:
            missing[part] = (path, key_parts)
            continue
        entries[part] = entry
        if console is not None:
            shown = {k: v for k, v in entry["metrics"].items() if k in ("ppl", "acc_mean")}
            summary = ", ".join(f"{k} {v:.4g}" for k, v in shown.items())
            print_plain(console, f"dense model evaluation ({part}) from the cache ({summary}): {path}")
    if missing:
        run = next(iter(missing)) if len(missing) == 1 else "all"
        res = evaluate(model, tokenizer, cfg.model_copy(update={"run": run}), console=console, title="dense")
        for part, (path, key_parts) in missing.items():
            entries[part] = {"key": key_parts, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                             "metrics": _part_of(res.metrics, part), "info": _info_of(res.info, part)}
            _store(path, entries[part])
    out: dict[str, float] = {}
    for part in parts:
        out.update(entries[part]["metrics"])
    return out


def _part_of(metrics: dict[str, float], part: str) -> dict[str, float]:
    """The metrics of one part of an evaluation of both: perplexities are ``ppl``/``ppl_*``."""
    is_ppl = {k: k == "ppl" or k.startswith("ppl_") for k in metrics}
    return {k: v for k, v in metrics.items() if is_ppl[k] == (part == "ppl")}


def _info_of(info: dict[str, Any], part: str) -> dict[str, Any]:
    """The info of one part of an evaluation of both (as an evaluation of that part alone records it)."""
    seconds = info.get("seconds", {})
    out = {"run": part, "seconds": {part: seconds[part]} if part in seconds else {}}
    if part in info:
        out[part] = info[part]
    return out


def unwritable_reason(folder: Path | None = None) -> str | None:
    """Why the cache folder cannot be written (None: it can), checked without writing anything there."""
    from gradprune.errors import GradpruneError
    from gradprune.outputs import check_writable_dir

    try:
        check_writable_dir(folder or cache_dir(), "GRADPRUNE_CACHE")
    except GradpruneError as exc:
        return str(exc)
    return None


def _store(path: Path, entry: dict) -> None:
    """Write a cache entry; a cache that cannot be written costs a re-evaluation next time, never this run."""
    from gradprune.errors import GradpruneWarning
    from gradprune.files import atomic_write_json

    try:
        atomic_write_json(path, entry)
    except OSError as exc:
        warnings.warn(f"the dense-metric cache {str(path.parent)!r} cannot be written ({exc.strerror or exc}): "
                      "the dense model's metrics are not cached and will be evaluated again next time; set "
                      "GRADPRUNE_CACHE to a writable folder", GradpruneWarning, stacklevel=3)


def add_dense_comparison(pruned: dict[str, float], dense: dict[str, float]) -> dict[str, float]:
    """``pruned`` plus ``dense_<name>`` for every dense metric, ``acc_drop``/``acc_norm_drop``, ``ppl_ratio``."""
    out = dict(pruned)
    out.update({f"dense_{k}": v for k, v in dense.items()})
    if "acc_mean" in pruned and "acc_mean" in dense:
        out["acc_drop"] = dense["acc_mean"] - pruned["acc_mean"]
    if "acc_norm_mean" in pruned and "acc_norm_mean" in dense:
        out["acc_norm_drop"] = dense["acc_norm_mean"] - pruned["acc_norm_mean"]
    if "ppl" in pruned and "ppl" in dense:
        out["ppl_ratio"] = pruned["ppl"] / dense["ppl"] if dense["ppl"] else float("inf")
    return out
