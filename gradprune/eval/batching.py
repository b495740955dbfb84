"""Evaluation batch sizes from a byte budget: what one batch materializes grows with vocabulary × tokens.

The rule itself (:func:`sequences_per_batch`, the bytes per logit and per token) lives with the memory plan
(:mod:`gradprune.memory.batches`), which sizes its evaluation lines with it; here it meets a model. The
budget is the caller's, or :func:`device_budget`: the one the run's memory plan set for the running stage,
else a fraction of the accelerator memory free when evaluation starts. lm-eval's batch for its longest
request comes from the same rule (:func:`lm_eval_rows`) instead of its search by trial forward passes (5 at
each size tried, from ``max_batch_size`` down), which at a GPU-sized batch costs as much as a good part of
the evaluation. On the CPU nothing is gained from large batches, and the former fixed budgets (and
lm-eval's search) stay.
"""

from __future__ import annotations

from typing import Any

from gradprune.memory import batches
from gradprune.memory.batches import DEVICE_FRACTION, MAX_SEQUENCES, sequences_per_batch

__all__ = ["DEVICE_FRACTION", "MAX_SEQUENCES", "activation_bytes_per_token", "device_budget", "lm_eval_rows",
           "model_dtype_bytes", "sequences_per_batch"]


def activation_bytes_per_token(model: Any, dtype_bytes: int) -> int:
    """One decoder layer's activations per token in inference (:func:`gradprune.memory.batches.inference_token_bytes`
    at the widths of the model's config)."""
    return batches.inference_token_bytes(*batches.config_widths(getattr(model, "config", None)), dtype_bytes)


def device_budget(device: Any, fraction: float = DEVICE_FRACTION) -> int | None:
    """Bytes an evaluation batch may fill on ``device``: the budget the run's memory plan set for the
    running stage; without one, ``fraction`` of the free memory on CUDA, None on other devices (their
    callers keep their fixed budgets)."""
    planned = batches.planned_budget()
    if planned is not None:
        return planned
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
    return batches.lm_eval_rows(length, vocab, model_dtype_bytes(model), batches.config_widths(model.config),
                                budget, cap=cap)
