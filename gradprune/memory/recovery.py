"""What the recovery stage holds: the pruned weights, LoRA's adapters with their gradients and AdamW's
moments, and what autograd keeps for one micro-batch of ``micro_batch_size`` × ``cutoff_len`` tokens.

The base weights are frozen, so autograd keeps no input of a base Linear; it keeps, per token and decoder
layer (read off transformers' Mistral / Llama / Qwen2 modules and peft's LoRA layers, and checked against
the tensors autograd saves, ``tests/memory``):

* each RMSNorm's fp32 upcast and its inverse root (``4·width + 4``); q, k, v and the attention output, with
  the KV heads repeated to the query width when a padded micro-batch hands SDPA a mask (instruction
  records), and that mask (``d·cutoff_len``); SDPA's log-sum-exp (``4·heads``); the MLP's gate, SiLU and
  up (``3·I·d``);
* per adapted projection: the input lora_A reads. peft keeps adapters in fp32 (it upcasts them for a
  bf16 model) and casts the input to it, so each adapter keeps its own fp32 copy (``4·in``) unless the
  model computes in fp32 and there is no dropout (then the inputs are the layer's own tensors); with
  dropout, the dropped-out copy and dropout's mask (a bool on a GPU, the scaled fp32 noise on the CPU);
  and lora_A's output (``4·r``);
* outside the layers, as in calibration, the fp32 log-probabilities (``4·V``), their gradient and the
  logits' during the backward pass (``8·V``).

With ``gradient_checkpointing`` each layer keeps its input and one layer is recomputed at a time. The
widths are the dense model's (pruning only narrows them): for a pruned model the estimate is an upper
bound.
"""

from __future__ import annotations

from dataclasses import dataclass

from gradprune.memory.autograd import autograd_lines
from gradprune.memory.shape import ModelShape
from gradprune.memory.workload import RecoveryLoad, Workload

#: bytes per element of the adapters, their gradients and AdamW's moments (fp32 whatever the model's dtype)
LORA_BYTES = 4
#: per adapter parameter: the weight, its gradient, AdamW's exp_avg and exp_avg_sq
TRAINING_BYTES_PER_PARAM = 4 * LORA_BYTES


def projection_widths(shape: ModelShape) -> dict[str, tuple[int, int]]:
    """(in, out) features of each projection of a decoder layer, at the dense widths."""
    h, q, kv, i = shape.hidden, shape.q_width, shape.kv_width, shape.intermediate
    return {"q_proj": (h, q), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (q, h),
            "gate_proj": (h, i), "up_proj": (h, i), "down_proj": (i, h)}


def lora_params(shape: ModelShape, rec: RecoveryLoad) -> int:
    """The adapters' parameters: r × (in + out) per adapted projection and layer (0 for a method the plan
    does not know)."""
    if not rec.rank:
        return 0
    io = projection_widths(shape)
    return shape.n_layers * rec.rank * sum(sum(io[m]) for m in rec.projections)


def lora_layer_bytes(shape: ModelShape, rec: RecoveryLoad, d: int, host_is_device: bool) -> int:
    """Bytes autograd keeps per token for one decoder layer while the adapters train (module docstring)."""
    norms = 4 * sum(shape.norm_widths) + 4 * len(shape.norm_widths)
    kv = shape.q_width if rec.padded else shape.kv_width
    attention = d * (2 * shape.q_width + 2 * kv) + 4 * shape.n_heads + (d * rec.cutoff_len if rec.padded else 0)
    mlp = 3 * shape.intermediate * d
    io = projection_widths(shape)
    inputs = [io[m][0] for m in rec.projections]
    if not rec.rank:  # a method the plan does not know: as if it kept the inputs of every projection
        return norms + attention + mlp + d * (2 * shape.hidden + shape.intermediate)
    if rec.dropout:
        mask = LORA_BYTES if host_is_device else 1
        adapters = sum(inputs) * (LORA_BYTES + mask)
    elif d != LORA_BYTES:
        adapters = LORA_BYTES * sum(inputs)
    else:  # fp32 without dropout: lora_A reads the layer's own tensors (o_proj's input is SDPA's output)
        shared = {"q_proj": "attn", "k_proj": "attn", "v_proj": "attn", "gate_proj": "mlp", "up_proj": "mlp",
                  "down_proj": "down"}
        width = {"attn": shape.hidden, "mlp": shape.hidden, "down": shape.intermediate}
        adapters = d * sum(width[k] for k in {shared[m] for m in rec.projections if m in shared})
    return norms + attention + mlp + adapters + LORA_BYTES * rec.rank * len(rec.projections)


def lora_stack_bytes(shape: ModelShape, rec: RecoveryLoad, d: int, host_is_device: bool) -> int:
    """:func:`lora_layer_bytes` over every decoder layer. In the first, the input of q/k/v (the embeddings'
    norm) needs no gradient, so their dropout keeps no mask (the rest outside the layers, the last norm and
    the labels, is as small as the first norm that keeps nothing)."""
    per_layer = lora_layer_bytes(shape, rec, d, host_is_device)
    first = 0
    if rec.rank and rec.dropout:
        first = (LORA_BYTES if host_is_device else 1) * shape.hidden * sum(
            m in rec.projections for m in ("q_proj", "k_proj", "v_proj"))
    return shape.n_layers * per_layer - first


@dataclass(frozen=True)
class RecoveryParts:
    """The recovery stage's lines beside the weights (``training``), and the adapters' line that the
    recovered evaluation holds beside the weights (``adapters``), as (item, bytes)."""

    training: list[tuple[str, int]]
    adapters: tuple[str, int]


def recovery_parts(shape: ModelShape, w: Workload, host_is_device: bool) -> RecoveryParts:
    """The recovery stage of ``w`` (which has one) on the model ``shape`` describes."""
    rec, d = w.recovery, w.compute_bytes
    n = lora_params(shape, rec)
    what = f"adapters: {n / 1e6:.3g} M params" if rec.rank else "the method's trainable params (unknown)"
    training = [(f"{what} + grads + AdamW moments (fp32)", n * TRAINING_BYTES_PER_PARAM)]
    t = rec.micro_batch * rec.cutoff_len
    # the backward through the adapters: the fp32 gradient of the widest adapted input and its cast
    widest = max((projection_widths(shape)[m][0] for m in rec.projections), default=0)
    transient = t * 2 * LORA_BYTES * widest
    training += autograd_lines(shape, t, d, lora_layer_bytes(shape, rec, d, host_is_device), transient,
                               rec.checkpointing, "adapters", lora_stack_bytes(shape, rec, d, host_is_device))
    return RecoveryParts(training, (f"adapters ({n / 1e6:.3g} M parameters, fp32)", n * LORA_BYTES))
