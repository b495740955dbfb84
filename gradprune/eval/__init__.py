"""Evaluation of a (pruned) model: perplexity and lm-eval zero-shot accuracy, plus cached dense metrics.

``evaluate(model, tokenizer, cfg)`` returns an :class:`EvalResult` (flat metrics + how they were
obtained). Nothing heavy (torch, transformers, lm-eval, datasets) is imported until it is needed.
"""

from __future__ import annotations

from gradprune.eval.checks import check_eval_config
from gradprune.eval.dense_cache import add_dense_comparison, dense_metrics, model_identity
from gradprune.eval.evaluation import EvalResult, evaluate

__all__ = [
    "EvalResult",
    "add_dense_comparison",
    "check_eval_config",
    "dense_metrics",
    "evaluate",
    "model_identity",
]
