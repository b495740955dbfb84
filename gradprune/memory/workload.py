"""What a recipe asks of the memory: dtypes, micro-batch, estimator and collector buffers, evaluation batches.

A :class:`Workload` is the recipe reduced to the numbers the estimate needs. The evaluation's batch
sizes are the evaluation's decision: :func:`workload` takes the rule that picks the perplexity batch as
a function (``gradprune.eval.perplexity.ppl_batch_size``), so the plan sizes the batch the run will use.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

#: bytes per element of each model.dtype
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
#: tokens per zero-shot request assumed for lm-eval's batches (lm-eval pads a batch to its longest request;
#: the seven default tasks' longest contexts are BoolQ passages, a few hundred tokens)
ZEROSHOT_TOKENS = 512
#: what the proxies' dense and pruned passes take per forward (``gradprune.eval.proxies._log_probs``)
PROXY_BATCH = 8

# (batch size, seq_len, vocab) -> windows per forward pass
PplBatchRule = Callable[[int | str, int, int], int]


@dataclass(frozen=True)
class EvalLoad:
    """The evaluation's largest batches: (windows, tokens) of perplexity, of a zero-shot batch and of the
    proxies' passes, and the proxies' dense reference kept on the host (windows × tokens); None = not run."""

    ppl: tuple[int, int] | None = None
    zeroshot: tuple[int, int] | None = None
    zeroshot_auto: bool = False
    proxies: tuple[int, int] | None = None
    proxy_reference: tuple[int, int] | None = None


@dataclass(frozen=True)
class Workload:
    """The recipe's settings that decide memory (see :func:`workload`)."""

    weight_bytes: int  # per parameter (model.dtype)
    compute_bytes: int  # per activation element (bf16-mixed computes in bfloat16)
    micro_batch: int  # samples per forward/backward pass (1 for per-sample estimators)
    seq_len: int
    num_samples: int
    gradients: bool  # a backward pass runs (gradient estimators or collectors)
    activations: bool  # activation hooks (o_proj / down_proj inputs) run
    checkpointing: bool
    mean_gradient: str | None  # None (no collector reads it), "device" or "host"
    element_moments: int  # fp32 per-weight buffers the estimator keeps itself (element level)
    estimator_level: str  # element, rows, groups, activation, none
    autocast_cache: bool  # bf16-mixed: autocast keeps a bf16 copy of every weight that needs a gradient
    world: int  # processes calibration is sharded over (FSDP), else 1
    ratio: float  # pruning.ratio: the evaluated model is about this much smaller
    eval: EvalLoad
    batch_size_auto: bool = False
    shared_mean_gradient: bool = False  # element-level Taylor reads Σg from the mean-gradient buffer

    def with_batch(self, micro_batch: int) -> Workload:
        """The same workload at another micro-batch size (bounded by the number of samples)."""
        return replace(self, micro_batch=max(1, min(micro_batch, self.num_samples)))

    def with_mean_gradient(self, where: str) -> Workload:
        """The same workload with the mean-gradient buffer on the device or in host memory."""
        if self.mean_gradient is None:
            return self
        # in host memory the buffer cannot stand in for element-level Taylor's own Σg on the device
        own = self.element_moments + (1 if where == "host" and self.shared_mean_gradient else 0)
        return replace(self, mean_gradient=where, element_moments=own)


def estimator_traits(recipe: Any) -> tuple[Any, list[Any]]:
    """The recipe's estimator and collectors, built as the run builds them (no model needed)."""
    from gradprune import plugins

    est = plugins.IMPORTANCE.build(recipe.importance.name, recipe.importance.params, "importance.params")
    cols = [plugins.COLLECTORS.build(c, recipe.stats.params.get(c), f"stats.params.{c}") for c in recipe.stats.collectors]
    return est, cols


def _level(est: Any) -> tuple[str, int, bool]:
    """(summing level, fp32 element buffers it keeps, whether Σg could come from the shared buffer)."""
    if not est.needs_gradients:
        return ("activation" if est.needs_activations else "none"), 0, False
    level = getattr(est, "level", None) or ("element" if {"mean_gradient", "mean_square"} & est.reads else "groups")
    if level != "element":
        return level, 0, False
    formula = getattr(est, "formula", None)
    if formula is None:  # a plugin that keeps per-weight state: assume both moments
        return level, 2, False
    return level, int(formula.uses_grad) + int(formula.uses_sq), bool(formula.uses_grad)


def workload(recipe: Any, vocab: int, ppl_batch: PplBatchRule | None = None, world: int = 1) -> Workload:
    """The :class:`Workload` of ``recipe`` (``calibration.batch_size: auto`` starts at 1; the plan raises it).

    ``vocab``: the model's vocabulary (the perplexity batch rule sizes windows by their logits);
    ``ppl_batch``: the evaluation's rule for windows per forward pass (default: ``eval.batch_size`` when it
    is a number, else 1); ``world``: processes an FSDP calibration is sharded over.
    """
    from gradprune.recipe import TRUE_PRECISION_DTYPE

    est, cols = estimator_traits(recipe)
    c, e = recipe.calibration, recipe.eval
    level, own, could_share = _level(est)
    mean_grad = "device" if any("mean_gradient" in col.reads for col in cols) else None
    shared = mean_grad is not None and could_share
    gradients = bool(cols) or est.needs_gradients
    wbytes = DTYPE_BYTES[recipe.model.dtype]
    precision = recipe.trainer.precision
    cbytes = DTYPE_BYTES[TRUE_PRECISION_DTYPE[precision]] if precision in TRUE_PRECISION_DTYPE else 2
    auto = c.batch_size == "auto"
    per_sample = bool(getattr(est, "per_sample", False))
    micro = 1 if per_sample or auto else min(int(c.batch_size), c.num_samples)
    return Workload(
        weight_bytes=wbytes, compute_bytes=cbytes, micro_batch=micro, seq_len=c.seq_len, num_samples=c.num_samples,
        gradients=gradients, activations=est.needs_activations, checkpointing=c.gradient_checkpointing and gradients,
        mean_gradient=mean_grad, element_moments=own - int(shared), estimator_level=level,
        autocast_cache=precision not in TRUE_PRECISION_DTYPE and gradients, world=world,
        ratio=recipe.pruning.ratio, eval=eval_load(e, vocab, ppl_batch), batch_size_auto=auto and not per_sample,
        shared_mean_gradient=shared,
    )


def eval_load(cfg: Any, vocab: int, ppl_batch: PplBatchRule | None = None) -> EvalLoad:
    """The evaluation's batches under ``cfg`` (the recipe's eval section)."""
    rule = ppl_batch or (lambda b, _s, _v: b if isinstance(b, int) else 1)
    ppl = zeroshot = proxies = reference = None
    auto = False
    if cfg.run in ("all", "ppl") and cfg.ppl_datasets:
        seq_lens = cfg.ppl_seq_len if isinstance(cfg.ppl_seq_len, list) else [cfg.ppl_seq_len]
        # the largest batch of tokens over the seq_lens (each runs its own batches)
        ppl = max(((rule(cfg.batch_size, s, vocab), s) for s in seq_lens), key=lambda bs: bs[0] * bs[1])
        if cfg.ppl_max_windows:
            ppl = (min(ppl[0], cfg.ppl_max_windows), ppl[1])
    if cfg.run in ("all", "zeroshot") and cfg.tasks:
        auto = cfg.batch_size == "auto"
        zeroshot = (1 if auto else int(cfg.batch_size), ZEROSHOT_TOKENS)
    # the proxies run where gradprune.eval.proxies.proxy_text_name names a text
    if cfg.proxy_windows and (cfg.proxy_text or (cfg.run != "none" and cfg.ppl_datasets)):
        proxies = (min(PROXY_BATCH, cfg.proxy_windows), cfg.proxy_seq_len)
        reference = (cfg.proxy_windows, cfg.proxy_seq_len - 1)
    return EvalLoad(ppl=ppl, zeroshot=zeroshot, zeroshot_auto=auto, proxies=proxies, proxy_reference=reference)
