"""The memory of one run: its plan (chosen before anything loads), each stage's measured peak, and an
out-of-memory error that names the stage, the estimate and the setting to change."""

from __future__ import annotations

import re
from typing import Any

from gradprune.errors import DeviceMemoryError
from gradprune.memory.batches import reset_planned_budget, set_planned_budget
from gradprune.memory.fit import Fitted, fit
from gradprune.memory.peaks import StagePeaks
from gradprune.memory.plan import gib
from gradprune.memory.shape import model_shape
from gradprune.memory.workload import workload

#: per stage: the settings that lower its memory, for an out-of-memory message
_KNOBS = {
    "load": "a lower model.dtype, or trainer.strategy: fsdp over several GPUs",
    "dense eval": "a lower eval.batch_size (or auto), eval.ppl_seq_len or eval.proxy_windows",
    "calibration": "a lower calibration.batch_size (auto picks what fits), or calibration.gradient_checkpointing: true",
    "surgery": "a lower model.dtype, or trainer.strategy: fsdp with eval.device_map: auto",
    "eval": "a lower eval.batch_size (or auto), eval.ppl_seq_len or eval.proxy_windows",
    "recovery": "a lower recovery.params.micro_batch_size (a divisor of recovery.params.batch_size), or "
                "recovery.params.gradient_checkpointing: true",
    "recovered eval": "a lower eval.batch_size (or auto), eval.ppl_seq_len or eval.proxy_windows",
}


class MemoryWatch:
    """The plan of one run and what was measured against it (``record()`` goes to run.json).

    Entering an evaluating stage hands the evaluation the budget the plan sized its batches to
    (:func:`gradprune.memory.batches.planned_budget`; on a GPU), until the next stage or :meth:`close`.
    """

    def __init__(self, fitted: Fitted | None, device: Any, notes: list[str] | None = None) -> None:
        self.fitted = fitted  # None: no plan could be made (the run goes on, measured only)
        self.peaks = StagePeaks(device)
        self.notes: list[str] = list(fitted.notes if fitted is not None else []) + list(notes or [])
        self._budget: Any = None  # the token of the budget set for the running stage

    @classmethod
    def for_run(cls, recipe: Any, config: Any) -> tuple[MemoryWatch, Any]:
        """The watch of ``recipe`` on this process's device, and the recipe with ``calibration.batch_size:
        auto`` replaced by the micro-batch the plan picked. A recipe that fits nowhere is refused here,
        before any weight loads (:class:`DeviceMemoryError`)."""
        from gradprune.errors import GradpruneError
        from gradprune.memory.capacity import device_capacity

        capacity = device_capacity(recipe.trainer)
        device = "cuda" if capacity is not None and capacity.kind == "cuda" else "cpu"
        try:
            fitted = fit_recipe(recipe, config, capacity)
        except GradpruneError:
            raise
        except Exception as exc:  # a model the plan cannot describe: measured, not planned
            why = f"no memory plan ({type(exc).__name__}: {' '.join(str(exc).split())[:200]})"
            if recipe.calibration.batch_size == "auto":
                raise DeviceMemoryError(f"calibration.batch_size auto needs the memory plan: {why}") from None
            return cls(None, device, [why]), recipe
        if fitted.problem is not None:
            raise DeviceMemoryError(f"not started: {fitted.problem}")
        return cls(fitted, device), settled_recipe(recipe, fitted)

    def enter(self, stage: str) -> None:
        """The run starts ``stage`` (and its evaluation, if any, sizes its batches to the plan's budget)."""
        self._reset_budget()
        self.peaks.enter(stage)
        budget = self.fitted.plan.budgets.get(stage) if self.fitted is not None else None
        if budget is not None:
            self._budget = set_planned_budget(budget)

    def close(self) -> None:
        """The run is over (or failed): the running stage's budget goes (its peak stays measured)."""
        self._reset_budget()

    def eval_budget(self, stage: str) -> int | None:
        """The bytes ``stage``'s evaluation batches are sized to (None: the CPU's rule, or no plan)."""
        return self.fitted.plan.budgets.get(stage) if self.fitted is not None else None

    def _reset_budget(self) -> None:
        if self._budget is not None:
            reset_planned_budget(self._budget)
            self._budget = None

    @property
    def stage(self) -> str | None:
        """The stage running now."""
        return self.peaks.current

    def out_of_memory(self, detail: str) -> DeviceMemoryError:
        """The error for an out-of-memory failure ``detail`` (the library's message) in the running stage."""
        stage = self.peaks.current or "the run"
        if self.fitted is not None:
            plan, cap = self.fitted.plan, self.fitted.capacity
            estimate = plan.stage_peak(stage) if stage in _KNOBS else plan.peak
            where = f" of {gib(cap.usable)} usable on {cap.label}" if cap is not None else ""
            said = f"the plan estimated {gib(estimate)}{where}"
        else:
            said = "no memory plan was made"
        asked = re.search(r"Tried to allocate [\d.]+ ?\w+", detail)
        if asked:
            said += "; t" + asked.group(0)[1:]
        return DeviceMemoryError(f"out of memory in {stage} ({said}): try {_KNOBS.get(stage, 'a smaller recipe')}")

    def record(self) -> dict[str, Any]:
        """run.json's ``memory``: the plan, each stage's estimate beside its measured peak, the notes."""
        self.close()
        self.peaks.close()
        if self.fitted is None:
            out = {"plan": None, "stages": {s: {"estimate_bytes": None, "peak_bytes": p}
                                            for s, p in self.peaks.peaks.items()},
                   "measured": self.peaks.how(), "notes": self.notes}
        else:
            plan = self.fitted.plan
            stages = {s: {"estimate_bytes": plan.stage_peak(s), "peak_bytes": p} for s, p in self.peaks.peaks.items()}
            out = {**self.fitted.to_dict(), "shape": plan.shape.to_dict(), "stages": stages,
                   "measured": self.peaks.how(), "notes": self.notes}
        if not self.peaks.cuda:  # host figures are above this: the process before the run loaded anything
            out["rss_before_bytes"] = self.peaks.baseline
        return out


def fit_recipe(recipe: Any, config: Any, capacity: Any = "device") -> Fitted:
    """The plan of ``recipe`` for the model ``config`` describes, fitted to ``capacity`` (default: the device
    ``recipe.trainer`` selects on this machine; None: unknown, nothing checked)."""
    from gradprune.parallel import device_count, is_fsdp

    if capacity == "device":
        from gradprune.memory.capacity import device_capacity

        capacity = device_capacity(recipe.trainer)
    t = recipe.trainer
    world = (device_count(t.devices, t.accelerator) or 1) * t.num_nodes if is_fsdp(t) else 1
    shape = model_shape(config)
    return fit(shape, workload(recipe, world=world), capacity)


def settled_recipe(recipe: Any, fitted: Fitted) -> Any:
    """``recipe`` with ``calibration.batch_size: auto`` replaced by the plan's micro-batch (unchanged otherwise)."""
    if recipe.calibration.batch_size != "auto":
        return recipe
    calibration = recipe.calibration.model_copy(update={"batch_size": fitted.plan.workload.micro_batch})
    return recipe.model_copy(update={"calibration": calibration})
