"""One evaluation of an in-memory model: perplexity and/or lm-eval zero-shot, as eval.run asks, and
what it returns (:class:`EvalResult`: flat metrics, the run.json / search CSV columns, and the details
behind them)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from gradprune.eval.checks import check_eval_config


@dataclass
class EvalResult:
    """``metrics``: flat name → number (``ppl``, ``ppl_wikitext2``, ``acc_piqa``, ``acc_mean``, ...).

    ``info``: how they were obtained: ``ppl`` (protocol, seq_lens, windows and tokens per text),
    ``zeroshot`` (lm-eval and task versions, n per task, few-shot, limit, timings per task) and
    ``seconds`` (wall time of each part).
    """

    metrics: dict[str, float] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return {"metrics": dict(self.metrics), "info": self.info}


@contextmanager
def model_state_kept(model: Any) -> Iterator[None]:
    """Evaluation mode inside; the model's own train/eval flags of every module restored after."""
    modes = {name: m.training for name, m in model.named_modules()}
    model.eval()
    try:
        yield
    finally:
        for name, m in model.named_modules():
            if name in modes:
                m.training = modes[name]  # per module: a model may mix train and eval submodules


def _ordered(metrics: dict[str, float]) -> dict[str, float]:
    """``ppl`` and ``acc_mean`` first, then the rest in the order they were produced."""
    head = [k for k in ("ppl", "acc_mean", "acc_norm_mean") if k in metrics]
    return {**{k: metrics[k] for k in head}, **{k: v for k, v in metrics.items() if k not in head}}


def evaluate(model: Any, tokenizer: Any, cfg: Any, console: Any = None, title: str = "pruned") -> EvalResult:
    """Evaluate ``model`` as ``cfg`` (the recipe's EvalSection) asks; EvalError on any task/data failure.

    ``title`` heads the progress block (``dense`` for the unpruned baseline) so logs tell the two apart.

    The model is evaluated as it is (device, dtype); its train/eval mode is restored afterwards.
    """
    from gradprune.eval.perplexity import evaluate_ppl
    from gradprune.eval.ppl_data import HUB_TEXTS
    from gradprune.eval.progress import EvalProgress
    from gradprune.eval.quiet import quiet_libraries
    from gradprune.eval.zeroshot import evaluate_zeroshot

    result = EvalResult(info={"run": cfg.run, "seconds": {}})
    if cfg.run == "none":
        return result
    check_eval_config(cfg, getattr(model, "config", None))
    metrics: dict[str, float] = {}
    want_ppl = cfg.run in ("all", "ppl") and bool(cfg.ppl_datasets)
    want_zs = cfg.run in ("all", "zeroshot") and bool(cfg.tasks)
    hub_ppl = want_ppl and any(name in HUB_TEXTS for name in cfg.ppl_datasets)
    quiet = quiet_libraries(lm_eval=want_zs, datasets=want_zs or hub_ppl)
    with quiet, model_state_kept(model), EvalProgress(console, title=title) as progress:
        if want_ppl:
            start = time.perf_counter()
            ppl_metrics, result.info["ppl"] = evaluate_ppl(model, tokenizer, cfg, progress)
            metrics.update(ppl_metrics)
            result.info["seconds"]["ppl"] = time.perf_counter() - start
        if want_zs:
            start = time.perf_counter()
            zs_metrics, result.info["zeroshot"] = evaluate_zeroshot(model, tokenizer, cfg, progress)
            metrics.update(zs_metrics)
            result.info["seconds"]["zeroshot"] = time.perf_counter() - start
    result.metrics = _ordered(metrics)
    return result


def evaluate_examples(model: Any, tokenizer: Any, cfg: Any,
                      indices: dict[str, list[int]]) -> dict[str, dict[int, dict[str, float]]]:
    """lm-eval per-example results of the given example indices per task (see
    :func:`gradprune.eval.zeroshot.evaluate_zeroshot_examples`), quiet and in evaluation mode."""
    from gradprune.eval.quiet import quiet_libraries
    from gradprune.eval.zeroshot import evaluate_zeroshot_examples

    with quiet_libraries(lm_eval=True, datasets=True), model_state_kept(model):
        return evaluate_zeroshot_examples(model, tokenizer, cfg, indices)


def zeroshot_task_sizes(cfg: Any) -> dict[str, int]:
    """How many examples each task of ``cfg.tasks`` evaluates (after ``cfg.limit``), with lm-eval and
    datasets kept quiet while the tasks load: what a caller needs to evaluate subsets of them
    (:func:`evaluate_examples`)."""
    from gradprune.eval.quiet import quiet_libraries
    from gradprune.eval.zeroshot import task_sizes

    with quiet_libraries(lm_eval=True, datasets=True):
        return task_sizes(cfg)
