"""Fitting a recipe to a device: the micro-batch of ``calibration.batch_size: auto``, the mean-gradient
buffer's place, and the refusal (with the numbers and the knobs, ``knobs.py``) when nothing fits.

The exact statistics keep their fp32 mean-gradient buffer on the device. Only when that does not fit a
GPU at any micro-batch does the plan move the buffer to host memory (the hooks add each gradient into
it there, in fp32: the same sums, one device-to-host copy of each gradient per micro-batch).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from gradprune.memory.capacity import USABLE_SHARE, Capacity
from gradprune.memory.knobs import calibration_knobs, describe_stage, largest_batch, recovery_knobs
from gradprune.memory.plan import MemoryPlan, gib, plan_memory
from gradprune.memory.shape import ModelShape
from gradprune.memory.workload import Workload

#: the micro-batch ``calibration.batch_size: auto`` takes where the device's memory is unknown
UNKNOWN_DEVICE_BATCH = 8


@dataclass
class Fitted:
    """The plan chosen for a device (``problem``: why the recipe fits nowhere; None when it fits)."""

    plan: MemoryPlan
    capacity: Capacity | None
    notes: list[str] = field(default_factory=list)
    problem: str | None = None

    @property
    def spread_eval(self) -> bool:
        """FSDP: the gathered model does not fit one GPU, so it is spread over the process's GPUs."""
        return self.plan.spread

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (run.json's ``memory``)."""
        return {"capacity": self.capacity.to_dict() if self.capacity else None, "plan": self.plan.to_dict(),
                "spread_eval": self.spread_eval, "notes": list(self.notes)}


def fit(shape: ModelShape, w: Workload, capacity: Capacity | None) -> Fitted:
    """The plan for ``w`` on ``capacity`` (None: unknown device, nothing is checked)."""
    host_is_device = capacity is None or capacity.kind == "cpu"
    if capacity is None:
        plan = plan_memory(shape, w.with_batch(UNKNOWN_DEVICE_BATCH) if w.batch_size_auto else w, host_is_device)
        note = (f"calibration.batch_size auto: {plan.workload.micro_batch} (device memory unknown)"
                if w.batch_size_auto else "device memory unknown: the plan is not checked")
        return Fitted(plan, None, [note])
    # the buffer moves to host memory only where the host is not the device, and only when exact does not fit
    # (under FSDP each layer's sums already live on one owner rank)
    modes = ["device"] + (["host"] if w.mean_gradient and not host_is_device and w.world == 1 else [])
    for mode in modes:
        wl = w.with_mean_gradient(mode)
        if w.batch_size_auto:
            b = largest_batch(shape, wl, capacity, host_is_device)
            if b == 0:
                continue
            wl = wl.with_batch(b)
        plan = plan_memory(shape, wl, host_is_device, capacity)
        if not plan.fits(("calibration",)):
            continue
        if not plan.fits():  # another stage does not fit, whatever calibration's setting
            break
        notes = [f"calibration.batch_size auto: {wl.micro_batch} (the largest that fits {capacity.label})"] \
            if w.batch_size_auto else []
        if mode == "host":
            exact = plan_memory(shape, w.with_batch(1) if w.batch_size_auto else w, host_is_device, capacity)
            notes.append(f"the mean-gradient buffer ({gib(plan.item('calibration', 'mean-gradient'))}) is kept in "
                         f"host memory: the exact mode needs {gib(exact.peak)} on {capacity.label}")
        return Fitted(plan, capacity, notes)
    plan = plan_memory(shape, w, host_is_device, capacity)
    return Fitted(plan, capacity, [], refusal(shape, w, capacity, plan))


def refusal(shape: ModelShape, w: Workload, capacity: Capacity, plan: MemoryPlan) -> str:
    """Why the recipe fits ``capacity`` at no setting the plan may choose, with the knobs that would help:
    the largest stage over its limit, and the recovery stage's own knobs when it is over too."""
    host_is_device = capacity.kind == "cpu"
    over = [st for st in plan.stages() if plan.stage_peak(st) > plan.stage_limit(st)]
    stage = max(over or [plan.peak_stage()], key=plan.stage_peak)
    has = (f"{capacity.what} has {gib(capacity.free)} free ({capacity.label}; a plan fills at most "
           f"{USABLE_SHARE:.0%}, {gib(capacity.usable)})")
    text = _stage_refusal(shape, w, capacity, plan, stage, has, host_is_device)
    if stage != "recovery" and "recovery" in over:
        text += "; and " + _stage_refusal(shape, w, capacity, plan, "recovery", "", host_is_device)
    return text


def _stage_refusal(shape: ModelShape, w: Workload, capacity: Capacity, plan: MemoryPlan, stage: str, has: str,
                   host_is_device: bool) -> str:
    need = plan.stage_peak(stage)
    has = f", {has}: " if has else ": "
    if stage == "calibration":
        knobs = calibration_knobs(shape, w, capacity, host_is_device)
        batch = "calibration.batch_size auto (1)" if w.batch_size_auto else f"calibration.batch_size {w.micro_batch}"
        return (f"calibration needs {gib(need)} at {batch} ({', '.join(describe_stage(plan, stage))}){has}"
                + (", or ".join(knobs) if knobs else "no setting of this recipe fits; use a device with more memory"))
    if stage == "recovery":
        rec = w.recovery
        knobs = recovery_knobs(shape, w, capacity, host_is_device)
        return (f"recovery needs {gib(need)} at recovery.params.micro_batch_size {rec.micro_batch} × cutoff_len "
                f"{rec.cutoff_len}" + (" with gradient checkpointing" if rec.checkpointing else "")
                + f" ({', '.join(describe_stage(plan, stage))}){has}"
                + (", or ".join(knobs) if knobs else "no recovery setting fits; use a device with more memory"))
    weights = plan.item(stage, "weights")
    if weights > plan.stage_limit(stage):
        return (f"the model's weights alone need {gib(weights)} ({stage}){has}use a lower model.dtype, or "
                f"trainer.strategy: fsdp over several GPUs with eval.device_map: auto")
    return (f"{stage} needs {gib(need)} (weights {gib(weights)}, the largest evaluation batch "
            f"{gib(need - weights)}){has}lower eval.batch_size, eval.ppl_seq_len or eval.proxy_windows")
