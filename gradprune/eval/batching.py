"""Evaluation batch sizes from a byte budget: what one batch materializes grows with vocabulary × tokens.

A batch of perplexity windows or of lm-eval requests holds, per token, the logits over the whole vocabulary
(and their log-softmax, in fp32 for perplexity) plus one decoder layer's activations at a time (inference
mode frees the rest). :func:`sequences_per_batch` is the one rule: sequences of ``seq_len`` tokens whose
bytes fit a budget. The budget is the caller's (a memory plan), or :func:`device_budget`: a fraction of the
accelerator memory free when evaluation starts. lm-eval's batch for its longest request comes from the same
rule (:func:`lm_eval_rows`) instead of its search by trial forward passes (5 at each size tried, from
``max_batch_size`` down), which at a GPU-sized batch costs as much as a good part of the evaluation. On the
CPU nothing is gained from large batches, and the former fixed budgets (and lm-eval's search) stay.
"""

from __future__ import annotations

from typing import Any

#: the share of the accelerator memory free at evaluation time that one evaluation batch may fill
DEVICE_FRACTION = 0.5
#: the most sequences per batch on an accelerator (beyond it nothing is gained and a batch gets unwieldy)
MAX_SEQUENCES = 1024


def sequences_per_batch(byte_budget: int, seq_len: int, vocab_size: int, bytes_per_logit: int,
                        bytes_per_token: int = 0, cap: int = MAX_SEQUENCES) -> int:
    """Sequences of ``seq_len`` tokens whose logits (``bytes_per_logit`` per vocabulary entry and token) and
    other per-token bytes (``bytes_per_token``: activations) fit ``byte_budget``; between 1 and ``cap``."""
    per_sequence = seq_len * (vocab_size * bytes_per_logit + bytes_per_token)
    return max(1, min(cap, byte_budget // max(1, per_sequence)))


def activation_bytes_per_token(model: Any, dtype_bytes: int) -> int:
    """One decoder layer's activations per token in inference (hidden states and MLP intermediates)."""
    cfg = getattr(model, "config", None)
    hidden = int(getattr(cfg, "hidden_size", 0) or 0)
    inter = int(getattr(cfg, "intermediate_size", 0) or 0)
    return (4 * hidden + 3 * inter) * dtype_bytes


def device_budget(device: Any, fraction: float = DEVICE_FRACTION) -> int | None:
    """Bytes an evaluation batch may fill on ``device``: ``fraction`` of its free memory on CUDA; None on
    other devices (their callers keep their fixed budgets)."""
    import torch

    device = torch.device(device)
    if device.type != "cuda":
        return None
    free, _ = torch.cuda.mem_get_info(device)
    return int(free * fraction)


def model_dtype_bytes(model: Any) -> int:
    """Bytes per element of the model's floating-point weights (its logits' dtype)."""
    for p in model.parameters():
        if p.is_floating_point():
            return p.element_size()
    return 4


def lm_eval_rows(model: Any, length: int, budget: int | None = None, cap: int = MAX_SEQUENCES) -> int | None:
    """Requests of ``length`` tokens per lm-eval forward pass that ``budget`` (default
    :func:`device_budget`) holds: logits and their log-softmax in the model's dtype, plus one layer's
    activations; at most ``cap``. None without a budget (the CPU: lm-eval then searches as it does)."""
    if budget is None:
        budget = device_budget(next(model.parameters()).device)
    if budget is None:
        return None
    vocab = int(getattr(model.config, "vocab_size", 0) or 1)
    dtype_bytes = model_dtype_bytes(model)
    return sequences_per_batch(budget, length, vocab, 2 * dtype_bytes, activation_bytes_per_token(model, dtype_bytes),
                               cap=cap)
