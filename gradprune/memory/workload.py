"""What a recipe asks of the memory: dtypes, micro-batch, estimator and collector buffers, evaluation
batches, the recovery stage's training.

A :class:`Workload` is the recipe reduced to the numbers the estimate needs. The evaluation's batches are
sized when the plan is made (:mod:`gradprune.memory.plan`), with the evaluation's own rule
(:mod:`gradprune.memory.batches`) and the budget the device leaves; here they are the recipe's settings.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

#: bytes per element of each model.dtype
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
#: what the proxies' dense and pruned passes take per forward (``gradprune.eval.proxies._log_probs``)
PROXY_BATCH = 8
#: the projections LoRA adapts when ``target_modules`` is null (``gradprune.recovery.lora.PROJECTIONS``)
LORA_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class EvalLoad:
    """The evaluation's settings that size its batches: ``batch_size`` / ``max_batch_size`` (eval's), the
    perplexity window lengths (empty: no perplexity) and window cap, whether lm-eval runs, the proxies'
    batch and their dense reference kept on the host (windows × tokens; None = not run)."""

    batch_size: int | str = "auto"
    max_batch_size: int | str = "auto"
    ppl_seq_lens: tuple[int, ...] = ()
    ppl_max_windows: int | None = None
    zeroshot: bool = False
    proxies: tuple[int, int] | None = None
    proxy_reference: tuple[int, int] | None = None


@dataclass(frozen=True)
class RecoveryLoad:
    """The recovery stage's training (``recovery.params``): micro-batches of ``micro_batch`` examples of at
    most ``cutoff_len`` tokens (``batch_size`` per optimizer step); LoRA of rank ``rank`` on ``projections``
    (``rank`` None: a method whose trainable parameters the plan does not know)."""

    micro_batch: int
    batch_size: int
    cutoff_len: int
    checkpointing: bool
    rank: int | None
    projections: tuple[str, ...]
    dropout: bool  # each adapter keeps its own dropped-out input (and its mask)
    padded: bool  # instruction records: padded micro-batches, so attention takes a mask (KV heads repeated)

    def with_micro_batch(self, micro_batch: int) -> RecoveryLoad:
        """The same training at another micro-batch size."""
        return replace(self, micro_batch=micro_batch)


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
    first_order: bool = False  # the estimator's term reads the gradient alone (w·g), not its square
    recovery: RecoveryLoad | None = None

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

    def with_recovery(self, recovery: RecoveryLoad) -> Workload:
        """The same workload with other recovery settings."""
        return replace(self, recovery=recovery)

    @property
    def streams_term(self) -> bool:
        """Whether each micro-batch's gradient goes into a per-row / per-group term (one fp32 product w⊙g of
        the weight in the hook) rather than only into fp32 sums: a rows / groups estimator, unless its term is
        first order and is summed once, at the end, from the mean-gradient buffer on this device."""
        if not self.gradients or self.estimator_level not in ("rows", "groups"):
            return False
        return not (self.first_order and self.mean_gradient == "device" and self.world == 1)


def estimator_traits(recipe: Any) -> tuple[Any, list[Any]]:
    """The recipe's estimator and collectors, built as the run builds them (no model needed)."""
    from gradprune import plugins

    est = plugins.IMPORTANCE.build(recipe.importance.name, recipe.importance.params, "importance.params")
    cols = [plugins.COLLECTORS.build(c, recipe.stats.params.get(c), f"stats.params.{c}") for c in recipe.stats.collectors]
    return est, cols


def _level(est: Any) -> tuple[str, int, bool, bool]:
    """(summing level, fp32 element buffers it keeps, whether Σg could come from the shared buffer, whether
    the term reads the gradient alone)."""
    if not est.needs_gradients:
        return ("activation" if est.needs_activations else "none"), 0, False, False
    level = getattr(est, "level", None) or ("element" if {"mean_gradient", "mean_square"} & est.reads else "groups")
    formula = getattr(est, "formula", None)
    first = formula is not None and formula.uses_grad and not formula.uses_sq
    if level != "element":
        return level, 0, False, first
    if formula is None:  # a plugin that keeps per-weight state: assume both moments
        return level, 2, False, False
    return level, int(formula.uses_grad) + int(formula.uses_sq), bool(formula.uses_grad), first


def workload(recipe: Any, *, world: int = 1) -> Workload:
    """The :class:`Workload` of ``recipe`` (``calibration.batch_size: auto`` starts at 1; the plan raises it);
    ``world``: processes an FSDP calibration is sharded over."""
    from gradprune.recipe import TRUE_PRECISION_DTYPE

    est, cols = estimator_traits(recipe)
    c = recipe.calibration
    level, own, could_share, first = _level(est)
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
        ratio=recipe.pruning.ratio, eval=eval_load(recipe.eval), batch_size_auto=auto and not per_sample,
        shared_mean_gradient=shared, first_order=first, recovery=recovery_load(recipe),
    )


def eval_load(cfg: Any) -> EvalLoad:
    """The evaluation's batch settings under ``cfg`` (the recipe's eval section)."""
    seq_lens: tuple[int, ...] = ()
    proxies = reference = None
    if cfg.run in ("all", "ppl") and cfg.ppl_datasets:
        seq_lens = tuple(cfg.ppl_seq_len if isinstance(cfg.ppl_seq_len, list) else [cfg.ppl_seq_len])
    # the proxies run where gradprune.eval.proxies.proxy_text_name names a text
    if cfg.proxy_windows and (cfg.proxy_text or (cfg.run != "none" and cfg.ppl_datasets)):
        proxies = (min(PROXY_BATCH, cfg.proxy_windows), cfg.proxy_seq_len)
        reference = (cfg.proxy_windows, cfg.proxy_seq_len - 1)
    return EvalLoad(batch_size=cfg.batch_size, max_batch_size=cfg.max_batch_size, ppl_seq_lens=seq_lens,
                    ppl_max_windows=cfg.ppl_max_windows, zeroshot=cfg.run in ("all", "zeroshot") and bool(cfg.tasks),
                    proxies=proxies, proxy_reference=reference)


def recovery_load(recipe: Any) -> RecoveryLoad | None:
    """The recovery stage's training under ``recipe.recovery`` (None: the recipe has none)."""
    from gradprune import plugins

    section = recipe.recovery
    if section is None:
        return None
    p = plugins.RECOVERY.build(section.name, section.params, "recovery.params").params
    rank = getattr(p, "r", None)
    projections = tuple(getattr(p, "target_modules", None) or LORA_PROJECTIONS) if rank else ()
    source = plugins.DATA.get(section.dataset.name)
    return RecoveryLoad(micro_batch=p.micro_batch_size, batch_size=p.batch_size, cutoff_len=p.cutoff_len,
                        checkpointing=p.gradient_checkpointing, rank=rank, projections=projections,
                        dropout=float(getattr(p, "dropout", 0.0) or 0.0) > 0, padded=hasattr(source, "records"))
