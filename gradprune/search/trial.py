"""One search trial: the recipe of a grid point → a run → a :class:`TrialOutcome` (failures included)."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from gradprune.errors import GradpruneError


@dataclass
class TrialOutcome:
    """What one trial produced: its row of ``search_results.csv`` and what the study stores of it."""

    #: run.json's flat metrics (plus ``calibration_reused``); empty for a failed trial
    metrics: dict[str, Any]
    success: bool
    #: why it failed, on one line ("" for a success)
    error: str
    duration_s: float
    #: a trial that ended before a full evaluation: ``pruned`` (successive halving), ``paused``
    #: (synchronous halving, decided later), ``screened`` (screening); None: complete or failed
    stopped: str | None = None
    #: False: the evaluation was cut short or not run (a stopped or screened trial); the CSV's column
    evaluated: bool = True
    #: the evaluation mode's own record (screening: ``{"screen_role": ...}``)
    extra: dict[str, Any] | None = None

    @property
    def status(self) -> str:
        """``complete``, ``failed``, or how the trial was stopped."""
        return self.stopped or ("complete" if self.success else "failed")

    def user_attrs(self) -> dict[str, Any]:
        """The trial's user attrs in the study (the CSV is written from them): success, error, metrics,
        duration_s and status, then ``evaluated: False`` for a trial that measured less than the full
        evaluation and ``extra`` where the mode keeps one."""
        attrs: dict[str, Any] = {"success": self.success, "error": self.error, "metrics": self.metrics,
                                 "duration_s": round(self.duration_s, 3), "status": self.status}
        if not (self.evaluated and self.success):
            attrs["evaluated"] = False  # a failed trial measured nothing (its row has no metrics)
        if self.extra is not None:
            attrs["extra"] = self.extra
        return attrs


def one_line(exc: BaseException) -> str:
    """A failure reason that fits one CSV cell."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if type(exc).__name__ == "OutOfMemoryError" or isinstance(exc, MemoryError):
        return "oom: out of memory" + (f": {text[:200]}" if text else "")
    name = "" if isinstance(exc, GradpruneError) else f"{type(exc).__name__}: "
    return (name + text)[:400]


def trial_metrics(out) -> dict[str, Any]:
    """A run's flat metrics as a trial records them (``out``: a :class:`gradprune.run.RunOutput`), with
    whether its calibration came from the search's store."""
    return {**out.record["metrics"], "calibration_reused": out.calibration_reused}


def run_trial(recipe, trial_dir: Path, store, console: Console) -> TrialOutcome:
    """Run the recipe and write its files into ``trial_dir``. Never raises for a failed trial (a
    GradpruneError, CUDA OOM, NaN or any other exception): the search goes on. KeyboardInterrupt
    propagates so the worker can mark the trial interrupted."""
    from gradprune.record import write_output
    from gradprune.run import run_experiment

    t0 = time.perf_counter()
    try:
        out = run_experiment(recipe, console, store=store, keep_model=recipe.output.save_model)
        if not out.writes:
            raise SystemExit(0)  # DDP / FSDP rank > 0: rank 0 records the trial
        write_output(out, trial_dir, recipe.output.save_model)
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # noqa: BLE001 - failure isolation is the point
        return failed_outcome(exc, t0)
    metrics = trial_metrics(out)
    bad = [k for k, v in metrics.items() if isinstance(v, float) and math.isnan(v) and k.startswith(("acc", "ppl"))]
    error = f"NaN in {', '.join(bad[:5])}" if bad else ""
    return TrialOutcome(metrics, not bad, error, time.perf_counter() - t0)


def failed_outcome(exc: BaseException, t0: float) -> TrialOutcome:
    """The outcome of a trial that raised ``exc`` (started at ``t0``); the frames of its traceback are
    cleared first (their locals would keep the trial's model and buffers alive until the exception is gone)."""
    from gradprune.memory.release import forget_frames, free_device_cache

    error = one_line(exc)
    forget_frames(exc)
    free_device_cache()
    return TrialOutcome({}, False, error, time.perf_counter() - t0)
