"""The evaluation's batch rule: how many sequences one forward pass takes, from a byte budget.

One batch of perplexity windows or of lm-eval requests holds, per token, the logits over the whole
vocabulary (and what the loss makes of them) and one decoder layer's activations at a time (inference
frees the rest). :func:`sequences_per_batch` turns a budget into sequences; :func:`ppl_windows` and
:func:`lm_eval_rows` are the two uses of it. The memory plan sizes its evaluation lines with these same
functions and the same budget the evaluation then runs with (:func:`planned_budget`), so the plan's
estimate is the batch that runs.

The budget: on a GPU, :data:`DEVICE_FRACTION` of what the plan leaves free beside the stage's weights
(:func:`stage_budget`), handed to the evaluation while the stage runs; without a plan, the same fraction of
the GPU memory free when evaluation starts. On the CPU nothing is gained from large batches: perplexity
keeps a fixed budget of fp32 logits (:data:`CPU_LOGITS_BYTES`, at most :data:`CPU_MAX_WINDOWS` windows)
and lm-eval searches its own batch size.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from typing import Any

#: the share of the free memory beside the weights that one evaluation batch may fill (on a GPU)
DEVICE_FRACTION = 0.5
#: the most sequences per batch on a GPU (beyond it nothing is gained and a batch gets unwieldy)
MAX_SEQUENCES = 1024
#: the CPU's perplexity batch: fp32 logits of at most this many bytes, at most this many windows
CPU_LOGITS_BYTES = 256 * 2**20
CPU_MAX_WINDOWS = 64


def sequences_per_batch(byte_budget: int, seq_len: int, vocab_size: int, bytes_per_logit: int,
                        bytes_per_token: int = 0, cap: int = MAX_SEQUENCES) -> int:
    """Sequences of ``seq_len`` tokens whose logits (``bytes_per_logit`` per vocabulary entry and token) and
    other per-token bytes (``bytes_per_token``: activations) fit ``byte_budget``; between 1 and ``cap``."""
    per_sequence = seq_len * (vocab_size * bytes_per_logit + bytes_per_token)
    return max(1, min(cap, byte_budget // max(1, per_sequence)))


def ppl_logit_bytes(dtype_bytes: int) -> int:
    """Bytes per vocabulary entry and token of a perplexity batch: the logits in the model's dtype, then
    an fp32 copy (``.float()`` of a bf16 tensor; for fp32 logits the flattening of the shifted, so
    non-contiguous, slice copies them instead) and the fp32 log-softmax cross-entropy keeps."""
    return dtype_bytes + 8


def lm_eval_logit_bytes(dtype_bytes: int) -> int:
    """Bytes per vocabulary entry and token of an lm-eval batch: the logits and their log-softmax, both in
    the model's dtype."""
    return 2 * dtype_bytes


def inference_token_bytes(hidden: int, q_width: int, kv_width: int, intermediate: int, dtype_bytes: int) -> int:
    """Bytes per token of one decoder layer's forward without autograd (one layer's tensors at a time): the
    residual stream, its norm, the attention input and output, q/k/v, and the MLP's gate, up and product."""
    return dtype_bytes * (4 * hidden + 2 * q_width + 2 * kv_width + 3 * intermediate)


def config_widths(config: Any) -> tuple[int, int, int, int]:
    """(hidden, query width, KV width, intermediate) of a transformers config (0 where it has none)."""
    hidden = int(getattr(config, "hidden_size", 0) or 0)
    heads = int(getattr(config, "num_attention_heads", 0) or 0)
    kv_heads = int(getattr(config, "num_key_value_heads", 0) or heads)
    head_dim = int(getattr(config, "head_dim", 0) or (hidden // heads if heads else 0))
    return hidden, heads * head_dim, kv_heads * head_dim, int(getattr(config, "intermediate_size", 0) or 0)


def ppl_windows(batch_size: int | str, seq_len: int, vocab_size: int, dtype_bytes: int = 4,
                widths: tuple[int, int, int, int] = (0, 0, 0, 0), budget: int | None = None) -> int:
    """Perplexity windows per forward pass: ``batch_size`` when it is a number; for ``auto`` what ``budget``
    holds (logits :func:`ppl_logit_bytes`, one layer's :func:`inference_token_bytes` at ``widths``), or,
    without a budget (the CPU), fp32 logits of at most :data:`CPU_LOGITS_BYTES`, at most 64 windows."""
    if isinstance(batch_size, int):
        return batch_size
    if budget is None:
        return sequences_per_batch(CPU_LOGITS_BYTES, seq_len, vocab_size, 4, cap=CPU_MAX_WINDOWS)
    return sequences_per_batch(budget, seq_len, vocab_size, ppl_logit_bytes(dtype_bytes),
                               inference_token_bytes(*widths, dtype_bytes))


def lm_eval_rows(length: int, vocab_size: int, dtype_bytes: int, widths: tuple[int, int, int, int], budget: int,
                 cap: int = MAX_SEQUENCES) -> int:
    """lm-eval requests of ``length`` tokens per forward pass that ``budget`` holds (logits and log-softmax
    in the model's dtype, one layer's activations); at most ``cap``."""
    return sequences_per_batch(budget, length, vocab_size, lm_eval_logit_bytes(dtype_bytes),
                               inference_token_bytes(*widths, dtype_bytes), cap=cap)


def stage_budget(free_beside_weights: int) -> int:
    """The evaluation budget of a stage whose device has ``free_beside_weights`` bytes left for batches."""
    return int(max(0, free_beside_weights) * DEVICE_FRACTION)


# ------------------------------------------------------------------- the budget of the stage that runs

_PLANNED: contextvars.ContextVar[int | None] = contextvars.ContextVar("evaluation_budget", default=None)


def planned_budget() -> int | None:
    """The evaluation budget the running stage's memory plan set (None: no plan set one)."""
    return _PLANNED.get()


@contextlib.contextmanager
def budget_of_stage(nbytes: int | None) -> Iterator[None]:
    """Inside the block the evaluation sizes its batches from ``nbytes`` (None: as without a plan)."""
    token = _PLANNED.set(nbytes)
    try:
        yield
    finally:
        _PLANNED.reset(token)


def set_planned_budget(nbytes: int | None) -> contextvars.Token:
    """Set the running stage's budget (a run's memory watch, at each stage); ``reset_planned_budget``
    with the returned token undoes it."""
    return _PLANNED.set(nbytes)


def reset_planned_budget(token: contextvars.Token) -> None:
    """Undo :func:`set_planned_budget`."""
    _PLANNED.reset(token)
