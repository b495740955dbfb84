"""The memory plan: each stage's peak on the device, from the model's shape and the recipe's workload.

Every number is a count of bytes derived from the config (no weight is read); what autograd keeps is in
``autograd.py``. Calibration holds the weights, the statistics' and the estimator's fp32 buffers, what
autograd keeps for one micro-batch, and the gradient of one weight at a time (the hooks free it) with the
hooks' fp32 temporaries (:func:`hook_bytes`). The evaluation stages (``evaluation.py``) and the recovery
stage (``recovery.py``) add their own lines; a GPU's evaluation batches are sized to the room the plan
leaves beside the weights.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from gradprune.memory.autograd import autograd_lines, forward_bytes, layer_activation_bytes
from gradprune.memory.batches import stage_budget
from gradprune.memory.capacity import Capacity
from gradprune.memory.evaluation import eval_batch
from gradprune.memory.recovery import recovery_parts
from gradprune.memory.shape import ModelShape
from gradprune.memory.workload import Workload

GiB = 2**30
#: the stages of a run, in the order they run (the dense evaluation may run after calibration under FSDP);
#: the last two only with a ``recovery`` section
STAGES = ("load", "dense eval", "calibration", "surgery", "eval", "recovery", "recovered eval")
#: the stages that hold the full model rank 0 gathers after FSDP calibration
GATHERED = ("dense eval", "surgery", "eval")


def gib(n: float) -> str:
    """Bytes for messages: ``91.2 GiB``, ``2.92 GiB``, ``310 MiB``, ``12.5 KiB``."""
    unit, size = next(((u, s) for u, s in (("GiB", GiB), ("MiB", 2**20)) if abs(n) >= s), ("KiB", 2**10))
    v = n / size
    return f"{v:.3g} {unit}" if v < 10 else f"{v:.1f} {unit}" if v < 1000 else f"{v:.0f} {unit}"


@dataclass(frozen=True)
class Line:
    """One line of the plan: what ``stage`` holds for ``item`` (device memory, or ``where="host"``)."""

    stage: str
    item: str
    bytes: int
    where: str = "device"


@dataclass
class MemoryPlan:
    """Each stage's lines; a stage's device peak is the sum of its device lines (host lines too when the
    device is the host). ``workload``: what was planned for; ``capacity``: the device it was planned for
    (None: unknown); ``spread``: FSDP's gathered model goes over every GPU of the process (it fits none
    alone); ``budgets``: per evaluating stage, the bytes its batches were sized to (None: the CPU's rule)."""

    shape: ModelShape
    workload: Workload
    lines: list[Line] = field(default_factory=list)
    host_is_device: bool = True
    capacity: Capacity | None = None
    spread: bool = False
    budgets: dict[str, int | None] = field(default_factory=dict)

    def stages(self) -> list[str]:
        """The stages this run has (the recovery stages only with a recovery section), in order."""
        present = {ln.stage for ln in self.lines}
        return [s for s in STAGES if s in present]

    def stage_peak(self, stage: str) -> int:
        """The peak of ``stage`` in device memory."""
        return sum(ln.bytes for ln in self.lines
                   if ln.stage == stage and (ln.where == "device" or self.host_is_device))

    def host_peak(self, stage: str) -> int:
        """What ``stage`` holds in host memory beside the device (0 when the device is the host)."""
        return 0 if self.host_is_device else sum(ln.bytes for ln in self.lines if ln.stage == stage and ln.where == "host")

    def stage_limit(self, stage: str) -> int | None:
        """What ``stage`` may fill: one device, or the gathered model spread over every GPU of the process
        (whole decoder layers per GPU); None without a capacity."""
        if self.capacity is None:
            return None
        return self.capacity.usable * (self.capacity.gpus if self.spread and stage in GATHERED else 1)

    def fits(self, stages: tuple[str, ...] | None = None) -> bool:
        """Whether every stage (or those of ``stages``) fits its limit (True without a capacity)."""
        return all(self.stage_peak(s) <= (self.stage_limit(s) or self.stage_peak(s)) for s in stages or STAGES)

    @property
    def peak(self) -> int:
        """The largest stage peak."""
        return max(self.stage_peak(s) for s in STAGES)

    def peak_stage(self) -> str:
        """The stage with the largest peak."""
        return max(STAGES, key=self.stage_peak)

    def item(self, stage: str, prefix: str) -> int:
        """The bytes of ``stage``'s lines whose item starts with ``prefix``."""
        return sum(ln.bytes for ln in self.lines if ln.stage == stage and ln.item.startswith(prefix))

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (run.json's ``memory.plan``)."""
        w = self.workload
        out = {"micro_batch_size": w.micro_batch, "batch_size_auto": w.batch_size_auto,
               "gradient_checkpointing": w.checkpointing, "mean_gradient": w.mean_gradient,
               "stage_estimates": {s: self.stage_peak(s) for s in self.stages()},
               "eval_budget_bytes": dict(self.budgets), "lines": [ln.__dict__ for ln in self.lines]}
        if w.recovery is not None:
            out["recovery"] = {"micro_batch_size": w.recovery.micro_batch, "cutoff_len": w.recovery.cutoff_len,
                               "gradient_checkpointing": w.recovery.checkpointing}
        return out


def hook_bytes(shape: ModelShape, w: Workload, host_is_device: bool = False) -> int:
    """The largest prunable weight's gradient (in the weights' dtype) and the hooks' fp32 temporaries while
    they reduce it: the product w⊙g of a term streamed per micro-batch (rows / groups estimators that do
    not read the mean-gradient buffer), and under FSDP the fp32 copy reduced to the layer's owner rank.
    On a GPU the folds into fp32 sums (mean gradient, element moments), the norm and the product convert a
    bf16 / fp16 operand inside the kernel. On the host (``host_is_device``) the CPU kernels first copy each
    such operand to fp32 (``benchmarks/hook_bytes.py``): one copy for a fold, the norm or a sum, two for an
    operation that reads two (the product w⊙g, the element moment g⊙g). The hooks run these one after the
    other, so the largest operation's copies are what is alive at once."""
    n = shape.largest_weight
    if not w.gradients:
        return 0
    temp = 4 * n if w.streams_term else 0
    if w.world > 1 and w.mean_gradient is not None:
        temp += 4 * n
    if host_is_device and w.weight_bytes != 4:
        squares = w.estimator_level == "element" and not w.first_order  # Σ g² per element: addcmul(g, g)
        temp += 4 * n * (2 if w.streams_term or squares else 1)
    return n * w.weight_bytes + temp


def calibration_lines(shape: ModelShape, w: Workload, weights: int, host_is_device: bool = False) -> list[Line]:
    """The calibration stage: weights, buffers, what autograd keeps, and the backward's transient peak
    (``host_is_device``: the hooks' temporaries as the CPU kernels allocate them)."""
    s, prunable = "calibration", shape.prunable
    lines = [Line(s, "weights", weights)]
    if w.mean_gradient is not None:
        share = prunable // w.world if w.world > 1 else prunable  # FSDP: one owner rank per layer
        lines.append(Line(s, "mean-gradient buffer (fp32, 4 B per prunable param)", 4 * share,
                          "host" if w.mean_gradient == "host" else "device"))
    if w.element_moments:
        lines.append(Line(s, f"estimator: {w.element_moments} fp32 sum(s) per prunable parameter",
                          4 * prunable * w.element_moments))
    if w.autocast_cache:
        lines.append(Line(s, "autocast: bf16 copies of the prunable weights", 2 * prunable))
    if not (w.gradients or w.activations):
        return lines
    t, d, v = w.micro_batch * w.seq_len, w.compute_bytes, shape.vocab
    if not w.gradients:  # activation estimators: a forward pass without autograd
        lines.append(Line(s, "activations (forward only)", t * (forward_bytes(shape, d) + (d + 8) * v)))
        return lines
    return lines + [Line(s, item, nbytes) for item, nbytes in autograd_lines(
        shape, t, d, layer_activation_bytes(shape, d), hook_bytes(shape, w, host_is_device), w.checkpointing, "hooks")]


def _eval_stage(plan: MemoryPlan, stage: str, fixed: list[Line]) -> None:
    """An evaluation stage: ``fixed`` (the weights, ...) and its largest batch, sized (on a GPU) to the
    budget the room beside them leaves."""
    plan.lines += fixed
    budget = None
    cap = plan.capacity
    if cap is not None and cap.kind == "cuda":
        gpus = cap.gpus if plan.spread and stage in GATHERED else 1
        budget = stage_budget(cap.usable - sum(ln.bytes for ln in fixed if ln.where == "device") // max(1, gpus))
    plan.budgets[stage] = budget
    batch = eval_batch(plan.shape, plan.workload, budget)
    if batch is not None:
        plan.lines.append(Line(stage, *batch))


def _spread(shape: ModelShape, w: Workload, capacity: Capacity | None, weights: int) -> bool:
    """FSDP on GPUs: the gathered model is spread over the process's GPUs when it does not fit one."""
    return (capacity is not None and capacity.kind == "cuda" and w.world > 1 and capacity.gpus > 1
            and weights > capacity.usable)


def plan_memory(shape: ModelShape, w: Workload, host_is_device: bool = True,
                capacity: Capacity | None = None) -> MemoryPlan:
    """Every stage's lines for ``w`` on the model ``shape`` describes; ``capacity``: the device it is
    planned for (its evaluation batches are sized to it on a GPU; None: the CPU's rule)."""
    full = shape.params * w.weight_bytes
    plan = MemoryPlan(shape, w, host_is_device=host_is_device, capacity=capacity,
                      spread=_spread(shape, w, capacity, full))
    # FSDP: a rank holds 1/N of the weights plus the decoder layers being all-gathered (two, with prefetch)
    sharded = full // w.world + 2 * shape.largest_layer * w.weight_bytes if w.world > 1 else full
    pruned = int(full * (1 - w.ratio))
    reference = 0
    if w.eval.proxy_reference is not None:  # the dense log-probabilities, fp32, kept on the host until eval
        reference = w.eval.proxy_reference[0] * w.eval.proxy_reference[1] * shape.vocab * 4
    plan.lines.append(Line("load", "weights", sharded if w.world > 1 else full))
    _eval_stage(plan, "dense eval", [Line("dense eval", "weights", full)])
    plan.lines += calibration_lines(shape, w, sharded, host_is_device)
    plan.lines += [Line("surgery", "weights", full), Line("surgery", "one weight sliced", shape.largest_weight * w.weight_bytes)]
    _eval_stage(plan, "eval", [Line("eval", "weights", pruned)])
    if w.recovery is not None:
        parts = recovery_parts(shape, w, host_is_device)
        plan.lines += [Line("recovery", "weights (pruned)", pruned)] + [Line("recovery", *p) for p in parts.training]
        _eval_stage(plan, "recovered eval", [Line("recovered eval", "weights (pruned)", pruned),
                                              Line("recovered eval", *parts.adapters)])
    if reference:
        for stage in ("calibration", "surgery", "eval"):
            plan.lines.append(Line(stage, "proxies: dense log-probabilities (fp32)", reference, "host"))
    return plan
