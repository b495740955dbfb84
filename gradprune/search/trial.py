"""One search trial: the recipe of a grid point → a run → a flat CSV row (failures become rows)."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

from rich.console import Console

from gradprune.errors import GradpruneError


def one_line(exc: BaseException) -> str:
    """A failure reason that fits one CSV cell."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if type(exc).__name__ == "OutOfMemoryError" or isinstance(exc, MemoryError):
        return "oom: out of memory" + (f": {text[:200]}" if text else "")
    name = "" if isinstance(exc, GradpruneError) else f"{type(exc).__name__}: "
    return (name + text)[:400]


def run_trial(recipe, trial_dir: Path, store, console: Console) -> dict[str, Any]:
    """Run the recipe; return ``{"metrics": ..., "success": bool, "error": str}``. Never raises
    for a failed trial (a GradpruneError, CUDA OOM, NaN or any other exception): the search goes on.
    KeyboardInterrupt propagates so the worker can mark the trial interrupted."""
    from gradprune.record import write_output
    from gradprune.run import run_experiment

    t0 = time.perf_counter()
    try:
        out = run_experiment(recipe, console, store=store, keep_model=recipe.output.save_model)
        if not out.writes:
            raise SystemExit(0)  # DDP / FSDP rank > 0: rank 0 records the trial
        write_output(out, trial_dir, recipe.output.save_model)
        metrics = out.record["metrics"]
        metrics["calibration_reused"] = bool(out.record["calibration"].get("reused_calibration", False))
        bad = [k for k, v in metrics.items() if isinstance(v, float) and math.isnan(v) and k.startswith(("acc", "ppl"))]
        if bad:
            return {"metrics": metrics, "success": False, "error": f"NaN in {', '.join(bad[:5])}",
                    "duration_s": time.perf_counter() - t0}
        return {"metrics": metrics, "success": True, "error": "", "duration_s": time.perf_counter() - t0}
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # noqa: BLE001 - failure isolation is the point
        return failed_row(exc, t0)


def failed_row(exc: BaseException, t0: float) -> dict[str, Any]:
    """The result of a trial that raised ``exc``; the frames of its traceback are cleared first (their
    locals would keep the trial's model and buffers alive until the exception is gone)."""
    from gradprune.memory.release import forget_frames, free_device_cache

    error = one_line(exc)
    forget_frames(exc)
    free_device_cache()
    return {"metrics": {}, "success": False, "error": error, "duration_s": time.perf_counter() - t0}
