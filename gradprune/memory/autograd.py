"""What autograd keeps for a forward + backward pass, per token: ``T`` tokens of a micro-batch, the widths
of :class:`~gradprune.memory.shape.ModelShape`, ``d`` the compute dtype's bytes. Read off transformers'
Llama / Mistral / Qwen2 modules (and checked against the tensors autograd saves, ``tests/memory``); per
token and decoder layer, with SDPA attention, when the prunable weights need gradients (calibration):

* the inputs of q/k/v and of gate/up (``2·H·d``), the query, key and value after RoPE and the attention
  output that o_proj reads (``(2·Hq + 2·Hkv)·d``: transformers hands SDPA the KV heads unrepeated when no
  mask is given), SDPA's log-sum-exp (``4·heads``), the MLP's gate, up, activation and product
  (``4·I·d``), and each RMSNorm's fp32 upcast (``4·width``);
* outside the layers, the fp32 log-probabilities the loss keeps (``4·V``: transformers 5's
  ``ForCausalLMLoss`` upcasts the logits to fp32 and cross-entropy keeps its log-softmax); the backward
  pass then holds their gradient and the logits' (``8·V`` more) while all of the above is still alive;
* with gradient checkpointing, each layer keeps only its input (``H·d``) and one layer at a time is
  recomputed during the backward pass.

What a layer keeps when only adapters train is in ``recovery.py``; :func:`autograd_lines` puts either into
the stage's lines.
"""

from __future__ import annotations

from gradprune.memory.batches import inference_token_bytes
from gradprune.memory.shape import ModelShape


def layer_activation_bytes(shape: ModelShape, d: int) -> int:
    """Bytes autograd keeps per token for one decoder layer's backward (see the module docstring)."""
    per_token = d * (2 * shape.hidden + 2 * shape.q_width + 2 * shape.kv_width + 4 * shape.intermediate)
    return per_token + 4 * shape.n_heads + 4 * sum(shape.norm_widths)


def layer_backward_bytes(shape: ModelShape, d: int) -> int:
    """Gradients alive per token while one decoder layer's backward runs (the MLP's are the largest)."""
    return d * (3 * shape.intermediate + 2 * shape.hidden) + 8 * shape.hidden


def autograd_lines(shape: ModelShape, t: int, d: int, layer: int, transient: int, checkpointing: bool,
                   what: str, all_layers: int | None = None) -> list[tuple[str, int]]:
    """What a forward + backward of ``t`` tokens keeps (``layer`` bytes per token and decoder layer, or
    ``all_layers`` for the whole stack, and the fp32 log-probabilities), and the backward's transient peak:
    the logits' gradient, or one layer's gradients (recomputed first under checkpointing) with
    ``transient`` bytes of ``what``."""
    v = shape.vocab
    logits_grad = 8 * v * t
    if checkpointing:
        kept = t * (shape.n_layers * shape.hidden * d + 4 * v + 4 * shape.hidden)
        layer_peak = t * (layer + layer_backward_bytes(shape, d)) + transient - t * (4 * v + 4 * shape.hidden)
        return [("activations: layer inputs, fp32 log-probs (ckpt)", kept),
                ("backward peak: " + ("logits' gradient" if logits_grad >= layer_peak else
                                      f"a recomputed layer, gradients, {what}"), max(logits_grad, layer_peak))]
    kept = t * ((shape.n_layers * layer if all_layers is None else all_layers) + 4 * v)
    layer_peak = t * layer_backward_bytes(shape, d) + transient
    return [("activations for the backward (+ fp32 log-probs)", kept),
            ("backward peak: " + ("logits' gradient" if logits_grad >= layer_peak else
                                  f"a layer's gradients, {what}"), max(logits_grad, layer_peak))]


def forward_bytes(shape: ModelShape, d: int) -> int:
    """Bytes per token of one decoder layer's forward without autograd (one layer at a time)."""
    return inference_token_bytes(shape.hidden, shape.q_width, shape.kv_width, shape.intermediate, d)
