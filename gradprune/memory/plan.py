"""The memory plan: each stage's peak on the device, from the model's shape and the recipe's workload.

Every number is a count of bytes derived from the config (no weight is read): ``P`` parameters, ``T``
tokens of a micro-batch, the widths of :class:`~gradprune.memory.shape.ModelShape`, ``d`` the compute
dtype's bytes. What autograd keeps for the backward pass was read off transformers' Llama / Mistral /
Qwen2 modules (and checked against the tensors autograd saves, ``tests/memory``); per token and
decoder layer, with SDPA attention:

* the inputs of q/k/v and of gate/up (``2·H·d``), the query, key and value after RoPE and the attention
  output that o_proj reads (``(2·Hq + 2·Hkv)·d``: transformers hands SDPA the KV heads unrepeated when no
  mask is given), SDPA's log-sum-exp (``4·heads``), the MLP's gate, up, activation and product
  (``4·I·d``), and each RMSNorm's fp32 upcast (``4·width``);
* outside the layers, the fp32 log-probabilities the loss keeps (``4·V``: transformers 5's
  ``ForCausalLMLoss`` upcasts the logits to fp32 and cross-entropy keeps its log-softmax); the backward
  pass then holds their gradient and the logits' (``8·V`` more) while all of the above is still alive;
* with gradient checkpointing, each layer keeps only its input (``H·d``) and one layer at a time is
  recomputed during the backward pass.

The gradient of one weight exists at a time (the hooks free it), with the hooks' fp32 temporaries.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from gradprune.memory.shape import ModelShape
from gradprune.memory.workload import Workload

GiB = 2**30
#: the stages of a run, in the order they run (the dense evaluation may run after calibration under FSDP)
STAGES = ("load", "dense eval", "calibration", "surgery", "eval")


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
    device is the host). ``workload``: what was planned for."""

    shape: ModelShape
    workload: Workload
    lines: list[Line] = field(default_factory=list)
    host_is_device: bool = True

    def stage_peak(self, stage: str) -> int:
        """The peak of ``stage`` in device memory."""
        return sum(ln.bytes for ln in self.lines
                   if ln.stage == stage and (ln.where == "device" or self.host_is_device))

    def host_peak(self, stage: str) -> int:
        """What ``stage`` holds in host memory beside the device (0 when the device is the host)."""
        return 0 if self.host_is_device else sum(ln.bytes for ln in self.lines if ln.stage == stage and ln.where == "host")

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
        return {"micro_batch_size": w.micro_batch, "batch_size_auto": w.batch_size_auto,
                "gradient_checkpointing": w.checkpointing, "mean_gradient": w.mean_gradient,
                "stage_estimates": {s: self.stage_peak(s) for s in STAGES},
                "lines": [ln.__dict__ for ln in self.lines]}


def layer_activation_bytes(shape: ModelShape, d: int) -> int:
    """Bytes autograd keeps per token for one decoder layer's backward (see the module docstring)."""
    per_token = d * (2 * shape.hidden + 2 * shape.q_width + 2 * shape.kv_width + 4 * shape.intermediate)
    return per_token + 4 * shape.n_heads + 4 * sum(shape.norm_widths)


def layer_backward_bytes(shape: ModelShape, d: int) -> int:
    """Gradients alive per token while one decoder layer's backward runs (the MLP's are the largest)."""
    return d * (3 * shape.intermediate + 2 * shape.hidden) + 8 * shape.hidden


def hook_bytes(shape: ModelShape, w: Workload) -> int:
    """The largest prunable weight's gradient and the hooks' fp32 temporaries while they reduce it."""
    n, g = shape.largest_weight, w.weight_bytes  # gradients come in the weights' dtype
    if not w.gradients:
        return 0
    upcast = 4 * n if g != 4 else 0  # an fp32 copy of a bf16/fp16 gradient or weight
    if w.estimator_level in ("rows", "groups"):  # the term w·g (or w²·g²) of the weight, from fp32 copies
        return n * g + 2 * upcast + 4 * n
    return n * g + upcast


def calibration_lines(shape: ModelShape, w: Workload, weights: int) -> list[Line]:
    """The calibration stage: weights, buffers, what autograd keeps, and the backward's transient peak."""
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
    layer = layer_activation_bytes(shape, d)
    if not w.gradients:  # activation estimators: a forward pass without autograd
        lines.append(Line(s, "activations (forward only)", t * (forward_bytes(shape, d) + (d + 8) * v)))
        return lines
    hooks = hook_bytes(shape, w)
    logits_grad = 8 * v * t
    if w.checkpointing:
        kept = t * (shape.n_layers * shape.hidden * d + 4 * v + 4 * shape.hidden)
        lines.append(Line(s, "activations: layer inputs, fp32 log-probs (ckpt)", kept))
        layer_peak = t * (layer + layer_backward_bytes(shape, d)) + hooks - t * (4 * v + 4 * shape.hidden)
        lines.append(Line(s, "backward peak: " + ("logits' gradient" if logits_grad >= layer_peak else
                                                   "a recomputed layer, gradients, hooks"),
                          max(logits_grad, layer_peak)))
    else:
        kept = t * (shape.n_layers * layer + 4 * v)
        lines.append(Line(s, "activations for the backward (+ fp32 log-probs)", kept))
        layer_peak = t * layer_backward_bytes(shape, d) + hooks
        lines.append(Line(s, "backward peak: " + ("logits' gradient" if logits_grad >= layer_peak else
                                                   "a layer's gradients, hooks"),
                          max(logits_grad, layer_peak)))
    return lines


def forward_bytes(shape: ModelShape, d: int) -> int:
    """Bytes per token of one decoder layer's forward without autograd (one layer at a time)."""
    return d * (4 * shape.hidden + 2 * shape.q_width + 2 * shape.kv_width + 3 * shape.intermediate)


def eval_lines(stage: str, shape: ModelShape, w: Workload, weights: int) -> list[Line]:
    """An evaluation stage: the weights and the largest of its batches (perplexity, lm-eval, proxies)."""
    d, v, e = w.weight_bytes, shape.vocab, w.eval  # evaluation computes in the model's dtype (no autocast)
    lines = [Line(stage, "weights", weights)]
    batches = []
    if e.ppl is not None:
        t = e.ppl[0] * e.ppl[1]  # logits, their fp32 copy and fp32 log-softmax (cross-entropy)
        batches.append((f"perplexity batch ({e.ppl[0]} × {e.ppl[1]} tokens)", t * (forward_bytes(shape, d) + (d + 8) * v)))
    if e.zeroshot is not None:
        t = e.zeroshot[0] * e.zeroshot[1]  # lm-eval: logits and their log-softmax, in the model's dtype
        what = "lm-eval batch (auto: lm-eval sizes it)" if e.zeroshot_auto else \
            f"lm-eval batch ({e.zeroshot[0]} × {e.zeroshot[1]} tokens)"
        batches.append((what, t * (forward_bytes(shape, d) + 2 * d * v)))
    if e.proxies is not None:
        t = e.proxies[0] * e.proxies[1]
        batches.append((f"proxy batch ({e.proxies[0]} × {e.proxies[1]} tokens)", t * (forward_bytes(shape, d) + (d + 8) * v)))
    if batches:
        lines.append(Line(stage, *max(batches, key=lambda b: b[1])))
    return lines


def plan_memory(shape: ModelShape, w: Workload, host_is_device: bool = True) -> MemoryPlan:
    """Every stage's lines for ``w`` on the model ``shape`` describes."""
    plan = MemoryPlan(shape, w, host_is_device=host_is_device)
    full = shape.params * w.weight_bytes
    # FSDP: a rank holds 1/N of the weights plus the decoder layers being all-gathered (two, with prefetch)
    sharded = full // w.world + 2 * shape.largest_layer * w.weight_bytes if w.world > 1 else full
    pruned = int(full * (1 - w.ratio))
    reference = 0
    if w.eval.proxy_reference is not None:  # the dense log-probabilities, fp32, kept on the host until eval
        reference = w.eval.proxy_reference[0] * w.eval.proxy_reference[1] * shape.vocab * 4
    plan.lines.append(Line("load", "weights", sharded if w.world > 1 else full))
    plan.lines += eval_lines("dense eval", shape, w, full)
    plan.lines += calibration_lines(shape, w, sharded)
    plan.lines += [Line("surgery", "weights", full), Line("surgery", "one weight sliced", shape.largest_weight * w.weight_bytes)]
    plan.lines += eval_lines("eval", shape, w, pruned)
    if reference:
        for stage in ("calibration", "surgery", "eval"):
            plan.lines.append(Line(stage, "proxies: dense log-probabilities (fp32)", reference, "host"))
    return plan
