"""Fitting a recipe to a device: the largest micro-batch for ``calibration.batch_size: auto``, the
mean-gradient buffer's place, and the refusal (with the numbers and the knobs) when nothing fits.

The exact statistics keep their fp32 mean-gradient buffer on the device. Only when that does not fit a
GPU at any micro-batch does the plan move the buffer to host memory (the hooks add each gradient into
it there, in fp32: the same sums, one device-to-host copy of each gradient per micro-batch).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from gradprune.memory.capacity import USABLE_SHARE, Capacity
from gradprune.memory.plan import STAGES, MemoryPlan, gib, plan_memory
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
        cap = self.capacity
        return (self.plan.workload.world > 1 and cap is not None and cap.kind == "cuda"
                and max(self.plan.stage_peak(s) for s in GATHERED) > cap.usable)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (run.json's ``memory``)."""
        return {"capacity": self.capacity.to_dict() if self.capacity else None, "plan": self.plan.to_dict(),
                "spread_eval": self.spread_eval, "notes": list(self.notes)}


#: the stages that hold the full model rank 0 gathers after FSDP calibration
GATHERED = ("dense eval", "surgery", "eval")


def stage_capacity(stage: str, w: Workload, capacity: Capacity) -> int:
    """What ``stage`` may fill: one device, or under FSDP every GPU of the process for the gathered model
    (spread over them, whole decoder layers per GPU)."""
    if stage in GATHERED and w.world > 1 and capacity.kind == "cuda" and capacity.gpus > 1:
        return capacity.usable * capacity.gpus
    return capacity.usable


def _fits(plan: MemoryPlan, capacity: Capacity) -> bool:
    return all(plan.stage_peak(s) <= stage_capacity(s, plan.workload, capacity) for s in STAGES)


def largest_batch(shape: ModelShape, w: Workload, capacity: Capacity, host_is_device: bool) -> int:
    """The largest micro-batch (≤ num_samples) whose plan fits ``capacity``; 0 when not even 1 fits."""
    lo, hi = 0, w.num_samples
    while lo < hi:  # plans grow with the micro-batch: bisect for the last that fits
        mid = (lo + hi + 1) // 2
        if _fits(plan_memory(shape, w.with_batch(mid), host_is_device), capacity):
            lo = mid
        else:
            hi = mid - 1
    return lo


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
        plan = plan_memory(shape, wl, host_is_device)
        if not _fits(plan, capacity):
            continue
        notes = [f"calibration.batch_size auto: {wl.micro_batch} (the largest that fits {capacity.label})"] \
            if w.batch_size_auto else []
        if mode == "host":
            exact = plan_memory(shape, w.with_batch(1) if w.batch_size_auto else w, host_is_device)
            notes.append(f"the mean-gradient buffer ({gib(plan.item('calibration', 'mean-gradient'))}) is kept in "
                         f"host memory: the exact mode needs {gib(exact.peak)} on {capacity.label}")
        return Fitted(plan, capacity, notes)
    plan = plan_memory(shape, w, host_is_device)
    return Fitted(plan, capacity, [], refusal(shape, w, capacity, plan))


def _knobs(shape: ModelShape, w: Workload, capacity: Capacity, host_is_device: bool) -> list[str]:
    """The recipe changes that would make calibration fit, each with its estimate: single changes first;
    where none is enough, the pairs that are."""
    def peak(wl: Workload) -> int:
        return plan_memory(shape, wl, host_is_device).stage_peak("calibration")

    knobs = []
    exact = largest_batch(shape, w, capacity, host_is_device)
    host = largest_batch(shape, w.with_mean_gradient("host"), capacity, host_is_device) \
        if w.mean_gradient and not host_is_device and w.world == 1 else 0
    if 0 < exact < w.micro_batch:
        knobs.append(f"calibration.batch_size ≤ {exact} (or auto)")
    if exact < host < w.micro_batch:
        knobs.append(f"calibration.batch_size ≤ {host} (the mean-gradient buffer then goes to host memory)")
    options: list[tuple[str, Workload]] = []
    if w.gradients and not w.checkpointing:
        options.append(("calibration.gradient_checkpointing: true", _replace(w, checkpointing=True)))
    if capacity.kind == "cuda" and w.world == 1 and w.element_moments == 0:
        # FSDP shards the weights and the mean-gradient buffer over the GPUs; activations stay per GPU
        options += [(f"trainer.strategy: fsdp with trainer.devices: {n}", _replace(w, world=n)) for n in (2, 4, 8)]
    if w.weight_bytes == 4:
        options.append(("model.dtype: bfloat16 with trainer.precision: bf16-true",
                        _replace(w, weight_bytes=2, compute_bytes=2, autocast_cache=False)))
    fitting = [(text, peak(wl)) for text, wl in options if peak(wl) <= capacity.usable]
    if not fitting and not knobs:  # pairs: checkpointing with FSDP or a lower dtype
        ckpt = [(t, wl) for t, wl in options if wl.checkpointing]
        others = [(t, wl) for t, wl in options if not wl.checkpointing]
        for text, wl in others:
            pair = _replace(wl, checkpointing=w.gradients)
            if ckpt and peak(pair) <= capacity.usable:
                fitting.append((f"{ckpt[0][0]} and {text}", peak(pair)))
    seen_fsdp = False
    for text, bytes_ in fitting:
        if "fsdp" in text:  # the fewest GPUs that fit is the one to name
            if seen_fsdp:
                continue
            seen_fsdp = True
        knobs.append(f"{text} (≈ {gib(bytes_)}" + (" per GPU)" if "fsdp" in text else ")"))
    return knobs


def _replace(w: Workload, **changes: Any) -> Workload:
    from dataclasses import replace

    return replace(w, **changes)


def refusal(shape: ModelShape, w: Workload, capacity: Capacity, plan: MemoryPlan) -> str:
    """Why the recipe fits ``capacity`` at no setting the plan may choose, with the knobs that would help."""
    host_is_device = capacity.kind == "cpu"
    over = [st for st in STAGES if plan.stage_peak(st) > stage_capacity(st, w, capacity)]
    stage = max(over or [plan.peak_stage()], key=plan.stage_peak)
    need = plan.stage_peak(stage)
    has = (f"{capacity.what} has {gib(capacity.free)} free ({capacity.label}; a plan fills at most "
           f"{USABLE_SHARE:.0%}, {gib(capacity.usable)})")
    if stage == "calibration":
        acts = plan.item("calibration", "activations") + plan.item("calibration", "backward peak")
        parts = [f"activations {gib(acts)}", f"weights {gib(plan.item('calibration', 'weights'))}"]
        if w.mean_gradient:
            parts.append(f"mean-gradient buffer {gib(plan.item('calibration', 'mean-gradient'))}")
        knobs = _knobs(shape, w, capacity, host_is_device)
        batch = "calibration.batch_size auto (1)" if w.batch_size_auto else f"calibration.batch_size {w.micro_batch}"
        return (f"calibration needs {gib(need)} at {batch} ({', '.join(parts)}), {has}: "
                + (", or ".join(knobs) if knobs else "no setting of this recipe fits; use a device with more memory"))
    weights = plan.item(stage, "weights")
    if weights > stage_capacity(stage, w, capacity):
        return (f"the model's weights alone need {gib(weights)} ({stage}), {has}: use a lower model.dtype, or "
                f"trainer.strategy: fsdp over several GPUs with eval.device_map: auto")
    return (f"{stage} needs {gib(need)} (weights {gib(weights)}, the largest evaluation batch "
            f"{gib(need - weights)}), {has}: lower eval.batch_size, eval.ppl_seq_len or eval.proxy_windows")
