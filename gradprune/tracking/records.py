"""What a run, a search's trial and an analysis send to the recipe's tracker, read from the files they
wrote (so a tracker never sees more, or other, numbers than run.json holds).

A run logs: the resolved recipe as params (nested keys joined with ``/``), run.json's metrics, the
calibration loss of every micro-batch (``calibration/loss``, step = micro-batch), and run.json and
layers.csv as files. A search writes ``tracking.json`` (the logger and its group) once; every trial then
logs as a run of that group, and ``gradprune analyze`` of the search's CSV attaches its report, figures,
analysis.json and paper/ to the group.

A tracker that fails (bad URI, server down, package missing) gives one warning and is off for the rest
of the process: the run's own files are written before any of this, and stay whatever happens here.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from gradprune.errors import GradpruneWarning

TRACKING = "tracking.json"  # beside a search's CSV: the logger section and the group of its runs
_off: set[str] = set()  # trackers that failed in this process


def _guard(name: str, what: str, fn: Callable[[], Any]) -> Any:
    """``fn()``, or None and one warning per tracker and process if it raises."""
    if name in _off:
        return None
    try:
        return fn()
    except Exception as exc:  # noqa: BLE001 - any tracker failure: warn once, keep the run
        _off.add(name)
        text = " ".join(str(exc).split())[:300]
        warnings.warn(f"logger {name}: {what} failed ({type(exc).__name__}: {text}); the results are written "
                      "as usual, tracking is off for the rest of this process", GradpruneWarning, stacklevel=3)
        return None


def build(section: Any):
    """The tracker of a recipe's ``logger`` section (a PluginSection or its dict), or None."""
    from gradprune import plugins

    if section is None:
        return None
    data = section if isinstance(section, dict) else section.model_dump()
    return plugins.LOGGERS.build(data["name"], data.get("params") or {}, "logger.params")


def _numbers(metrics: dict[str, Any]) -> dict[str, float]:
    out = {}
    for k, v in metrics.items():
        if isinstance(v, bool):
            v = float(v)
        if isinstance(v, (int, float)) and math.isfinite(v):
            out[k] = float(v)
    return out


def send_run(tracker, logger, record: dict[str, Any], files: Iterable[Path]) -> None:
    """Params, metrics, the calibration loss per micro-batch and files of one run, then close it."""
    logger.log_hyperparams(record.get("recipe") or {})
    losses = (record.get("calibration") or {}).get("loss_per_micro_batch") or []
    for step, loss in enumerate(losses):
        if isinstance(loss, (int, float)) and math.isfinite(loss):
            logger.log_metrics({"calibration/loss": float(loss)}, step=step)
    logger.log_metrics(_numbers(record.get("metrics") or {}), step=max(len(losses) - 1, 0))
    tracker.log_files(logger, [f for f in files if f.exists()])
    tracker.close(logger, "success")


def _read(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def log_run(recipe, out_dir: str | Path) -> None:
    """``gradprune run``: send the run written in ``out_dir`` to the recipe's logger (if it has one)."""
    section = getattr(recipe, "logger", None)
    if section is None:
        return
    out = Path(out_dir)
    record = _read(out / "run.json")
    if record is None:
        return
    tracker = _guard(section.name, "setting up", lambda: build(section))
    if tracker is None:
        return
    _guard(section.name, "logging the run", lambda: send_run(
        tracker, tracker.open(out.name or "run", out), record, [out / "run.json", out / "layers.csv"]))


def start_search(section: Any, search: str, out_dir: Path) -> None:
    """A search with a logger: open its group once and keep it in ``<out_dir>/tracking.json`` (a resumed
    search and every worker reuse it)."""
    from gradprune.files import atomic_write_json

    if section is None or (out_dir / TRACKING).exists():
        return
    data = section if isinstance(section, dict) else section.model_dump()
    tracker = _guard(data["name"], "setting up", lambda: build(data))
    group = _guard(data["name"], "creating the search's group", lambda: tracker.start_group(search, out_dir)) \
        if tracker is not None else None
    if group is not None:
        atomic_write_json(out_dir / TRACKING, {"logger": data, "group": group})


def log_trial(out_dir: Path, number: int, point: dict[str, Any], outcome: dict[str, Any]) -> None:
    """One finished trial of a search as a run of the search's group (a failed one with its point, its
    error and status ``failed``)."""
    meta = _read(out_dir / TRACKING)
    if meta is None:
        return
    name = meta["logger"]["name"]
    tracker = _guard(name, "setting up", lambda: build(meta["logger"]))
    if tracker is None:
        return
    trial_dir = out_dir / "trials" / f"trial_{number}"
    record = _read(trial_dir / "run.json") if outcome.get("success") else None

    def send() -> None:
        logger = tracker.open(f"trial_{number}", trial_dir, meta["group"])
        if record is not None:
            send_run(tracker, logger, record, [trial_dir / "run.json", trial_dir / "layers.csv"])
            return
        logger.log_hyperparams({**point, "status": str(outcome.get("status", "failed")),
                                "error": str(outcome.get("error", ""))[:240]})
        tracker.close(logger, "failed")

    _guard(name, f"logging trial {number}", send)


def attach_analysis(sources: Iterable[Path], out_dir: Path, names: Iterable[str]) -> list[str]:
    """Attach an analysis' files (``names`` in ``out_dir``) to the group of every analysed search that has
    a tracker; returns where they went."""
    where = []
    paths = [out_dir / n for n in names if (out_dir / n).exists()]
    for src in dict.fromkeys(Path(s).parent for s in sources):
        meta = _read(src / TRACKING)
        if meta is None:
            continue
        name = meta["logger"]["name"]
        tracker = _guard(name, "setting up", lambda meta=meta: build(meta["logger"]))
        if tracker is not None:
            done = _guard(name, "attaching the analysis",
                          lambda tracker=tracker, meta=meta, src=src: tracker.attach(meta["group"], paths, src))
            if done:
                where.append(done)
    return where
