"""The recipe changes that make a stage fit a device, each with its estimate: the largest micro-batch of
calibration (``calibration.batch_size: auto`` takes it), and the knobs a refusal names for calibration and
for the recovery stage."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from gradprune.memory.capacity import Capacity
from gradprune.memory.plan import gib, plan_memory
from gradprune.memory.shape import ModelShape
from gradprune.memory.workload import Workload


def _stage_fits(shape: ModelShape, w: Workload, capacity: Capacity, host_is_device: bool, stage: str) -> bool:
    plan = plan_memory(shape, w, host_is_device, capacity)
    return plan.stage_peak(stage) <= plan.stage_limit(stage)


def largest_batch(shape: ModelShape, w: Workload, capacity: Capacity, host_is_device: bool) -> int:
    """The largest calibration micro-batch (≤ num_samples) whose calibration stage fits ``capacity``; 0 when
    not even 1 fits (the other stages do not depend on it)."""
    lo, hi = 0, w.num_samples
    while lo < hi:  # the stage grows with the micro-batch: bisect for the last that fits
        mid = (lo + hi + 1) // 2
        if _stage_fits(shape, w.with_batch(mid), capacity, host_is_device, "calibration"):
            lo = mid
        else:
            hi = mid - 1
    return lo


def calibration_knobs(shape: ModelShape, w: Workload, capacity: Capacity, host_is_device: bool) -> list[str]:
    """The recipe changes that would make calibration fit, each with its estimate: single changes first;
    where none is enough, the pairs that are."""
    def peak(wl: Workload) -> int:
        return plan_memory(shape, wl, host_is_device, capacity).stage_peak("calibration")

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
        options.append(("calibration.gradient_checkpointing: true", replace(w, checkpointing=True)))
    if capacity.kind == "cuda" and w.world == 1 and w.element_moments == 0:
        # FSDP shards the weights and the mean-gradient buffer over the GPUs; activations stay per GPU
        options += [(f"trainer.strategy: fsdp with trainer.devices: {n}", replace(w, world=n)) for n in (2, 4, 8)]
    if w.weight_bytes == 4:
        options.append(("model.dtype: bfloat16 with trainer.precision: bf16-true",
                        replace(w, weight_bytes=2, compute_bytes=2, autocast_cache=False)))
    fitting = [(text, peak(wl)) for text, wl in options if peak(wl) <= capacity.usable]
    if not fitting and not knobs:  # pairs: checkpointing with FSDP or a lower dtype
        ckpt = [(t, wl) for t, wl in options if wl.checkpointing]
        others = [(t, wl) for t, wl in options if not wl.checkpointing]
        for text, wl in others:
            pair = replace(wl, checkpointing=w.gradients)
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


def recovery_knobs(shape: ModelShape, w: Workload, capacity: Capacity, host_is_device: bool) -> list[str]:
    """The ``recovery.params`` changes that would make the recovery stage fit: a smaller micro-batch (a
    divisor of ``batch_size``, so that a step still accumulates whole micro-batches), gradient
    checkpointing, or both; each with its estimate."""
    rec = w.recovery

    def peak(micro: int, ckpt: bool) -> int:
        wl = w.with_recovery(replace(rec, micro_batch=micro, checkpointing=ckpt))
        return plan_memory(shape, wl, host_is_device, capacity).stage_peak("recovery")

    def largest(ckpt: bool) -> int:
        sizes = [m for m in range(rec.micro_batch - 1, 0, -1) if rec.batch_size % m == 0]
        return next((m for m in sizes if peak(m, ckpt) <= capacity.usable), 0)

    knobs = []
    smaller = largest(rec.checkpointing)
    if smaller:
        knobs.append(f"recovery.params.micro_batch_size ≤ {smaller} (a divisor of recovery.params.batch_size "
                     f"{rec.batch_size}; ≈ {gib(peak(smaller, rec.checkpointing))})")
    if not rec.checkpointing:
        if peak(rec.micro_batch, True) <= capacity.usable:
            knobs.append(f"recovery.params.gradient_checkpointing: true (≈ {gib(peak(rec.micro_batch, True))})")
        elif not smaller and (both := largest(True)):
            knobs.append(f"recovery.params.gradient_checkpointing: true and recovery.params.micro_batch_size ≤ "
                         f"{both} (≈ {gib(peak(both, True))})")
    return knobs


def describe_stage(plan: Any, stage: str) -> list[str]:
    """The parts of a training stage's estimate for a refusal: activations, weights, buffers."""
    acts = plan.item(stage, "activations") + plan.item(stage, "backward peak")
    parts = [f"activations {gib(acts)}", f"weights {gib(plan.item(stage, 'weights'))}"]
    if plan.item(stage, "mean-gradient"):
        parts.append(f"mean-gradient buffer {gib(plan.item(stage, 'mean-gradient'))}")
    if plan.item(stage, "LoRA"):
        parts.append(f"adapters and their optimizer {gib(plan.item(stage, 'LoRA'))}")
    return parts
