"""Evaluation of a (pruned) model: perplexity and lm-eval zero-shot accuracy, plus cached dense metrics.

``evaluate(model, tokenizer, cfg)`` returns an :class:`EvalResult` (flat metrics + how they were
obtained). A caller that evaluates subsets of the zero-shot tasks (the search's successive halving)
uses :func:`zeroshot_task_sizes`, :func:`evaluate_examples` and :func:`aggregate_examples`. Nothing heavy (torch, transformers, lm-eval, datasets) is imported until it is needed.
"""

from __future__ import annotations

from gradprune.eval.checks import check_eval_config
from gradprune.eval.dense_cache import add_dense_comparison, dense_metrics
from gradprune.eval.evaluation import EvalResult, evaluate, evaluate_examples, zeroshot_task_sizes
from gradprune.eval.zeroshot import aggregate_examples

__all__ = [
    "EvalResult",
    "add_dense_comparison",
    "aggregate_examples",
    "check_eval_config",
    "dense_metrics",
    "evaluate",
    "evaluate_examples",
    "zeroshot_task_sizes",
]
