"""The evaluation stages' largest batch, sized with the evaluation's own rule (:mod:`gradprune.memory.batches`).

With a budget (a GPU: the room the plan leaves beside the stage's weights, handed to the evaluation while
the stage runs) perplexity takes the windows :func:`~gradprune.memory.batches.ppl_windows` gives, and
lm-eval (``eval.batch_size: auto`` with ``eval.max_batch_size: auto``) sizes each batch to the budget at its
longest request: whatever the requests' lengths, such a batch holds at most the budget (unless a single
request is longer than the budget holds). Without a budget (the CPU) perplexity keeps its fixed rule, and lm-eval
takes its own batch size: the plan counts ``eval.batch_size`` requests of :data:`ZEROSHOT_TOKENS` tokens (an
assumption: the requests' lengths are the data's), and under ``auto`` (lm-eval's search by trial passes)
one such request, the least it takes.
"""

from __future__ import annotations

from gradprune.memory.batches import (
    inference_token_bytes,
    lm_eval_logit_bytes,
    ppl_logit_bytes,
    ppl_windows,
)
from gradprune.memory.shape import ModelShape
from gradprune.memory.workload import Workload

#: tokens per lm-eval request assumed where lm-eval sizes its own batches (no budget): the seven default
#: tasks' longest contexts are BoolQ passages, a few hundred tokens
ZEROSHOT_TOKENS = 512


def widths(shape: ModelShape) -> tuple[int, int, int, int]:
    """(hidden, query width, KV width, intermediate): what one layer's inference activations depend on."""
    return shape.hidden, shape.q_width, shape.kv_width, shape.intermediate


def ppl_batch(shape: ModelShape, w: Workload, budget: int | None) -> tuple[int, int] | None:
    """(windows, tokens) of the largest perplexity batch over ``eval.ppl_seq_len`` (None: no perplexity)."""
    e = w.eval
    if not e.ppl_seq_lens:
        return None
    d = w.weight_bytes  # the evaluation computes in the model's dtype (no autocast)
    sizes = []
    for seq in e.ppl_seq_lens:
        n = ppl_windows(e.batch_size, seq, shape.vocab, d, widths(shape), budget)
        sizes.append((min(n, e.ppl_max_windows) if e.ppl_max_windows else n, seq))
    return max(sizes, key=lambda ns: ns[0] * ns[1])


def eval_batch(shape: ModelShape, w: Workload, budget: int | None) -> tuple[str, int] | None:
    """(line, bytes) of the evaluation's largest batch (perplexity, lm-eval or the proxies'); None when the
    stage evaluates nothing."""
    e, d, v = w.eval, w.weight_bytes, shape.vocab
    per_token = inference_token_bytes(*widths(shape), d)
    batches = []
    ppl = ppl_batch(shape, w, budget)
    if ppl is not None:
        batches.append((f"perplexity batch ({ppl[0]} × {ppl[1]} tokens)",
                        ppl[0] * ppl[1] * (ppl_logit_bytes(d) * v + per_token)))
    if e.zeroshot:
        budgeted = budget is not None and e.batch_size == "auto" and e.max_batch_size == "auto"
        if budgeted:  # whatever the requests' lengths: at most the budget
            batches.append(("lm-eval batch (auto: sized to the budget)", budget))
        elif isinstance(e.batch_size, int):
            batches.append((f"lm-eval batch ({e.batch_size} × {ZEROSHOT_TOKENS} tokens assumed)",
                            e.batch_size * ZEROSHOT_TOKENS * (lm_eval_logit_bytes(d) * v + per_token)))
        else:  # lm-eval's own search (trial passes from its cap down): not planned, one request counted
            batches.append((f"lm-eval batch (its own search; 1 × {ZEROSHOT_TOKENS} counted)",
                            ZEROSHOT_TOKENS * (lm_eval_logit_bytes(d) * v + per_token)))
    if e.proxies is not None:
        n, seq = e.proxies
        batches.append((f"proxy batch ({n} × {seq} tokens)", n * seq * (ppl_logit_bytes(d) * v + per_token)))
    return max(batches, key=lambda b: b[1]) if batches else None
