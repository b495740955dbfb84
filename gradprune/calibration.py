"""Calibration: one Lightning ``fit`` pass (manual backward, no optimizer) over the calibration windows.

The hooks (:mod:`gradprune.hooks`) do the work: each prunable weight's gradient goes to every plugin
(estimator or collector, :mod:`gradprune.calibration_plugin`) that reads it and to the mean moments, and
is freed at once. Parameters outside the prunable groups get no gradient at all. The model stays on the
device and in the dtype it was loaded with; with gradient checkpointing each decoder layer is recomputed
in the backward pass. After the pass the strategy (:mod:`gradprune.strategy`) combines the plugins'
accumulators across processes once and hands them the pieces of the mean gradient.
"""

from __future__ import annotations

import contextlib
import time
import warnings
from dataclasses import dataclass, field

import lightning as L
import torch

from gradprune.calibration_plugin import CalibrationPlugin
from gradprune.errors import CalibrationError
from gradprune.hooks import CHECK_EVERY, HookDispatcher, register_hooks
from gradprune.importance.base import ImportanceEstimator, Scores
from gradprune.memory.release import dismantle_trainer, free_device_cache
from gradprune.models.adapters import LayerModules
from gradprune.moments import MeanMoments
from gradprune.stats.gradient import StatCollector
from gradprune.strategy import CalibrationStrategy, strategy_for


@dataclass
class CalibrationResult:
    """What calibration hands to planning and recording: scores, per-layer stats, throughput and how the pass
    ran (each field once; :meth:`record` is run.json's ``calibration`` section)."""

    scores: dict[str, Scores]
    layer_stats: dict[str, list[float]]
    batches: int = 0
    tokens: int = 0
    seconds: float = 0.0
    mean_loss: float | None = None
    #: a backward pass ran (some plugin reads gradients) / activation hooks ran
    backward: bool = False
    activations: bool = False
    #: micro-batches of one sample (an estimator asked for exact per-sample terms)
    per_sample: bool = False
    micro_batch_size: int | None = None
    world_size: int = 1
    #: where the pass computed (this rank's device)
    device: str | None = None
    gradient_checkpointing: bool = False
    #: where the statistics' mean-gradient buffer was kept ("device", "host"; None: no collector read it)
    mean_gradient: str | None = None
    #: "single", "ddp" or "fsdp"
    strategy: str = "single"
    #: this rank's losses, in order (trackers plot them)
    loss_per_micro_batch: list[float] = field(default_factory=list)
    #: how the calibration windows were drawn (set by the run; a stored calibration keeps it)
    windows: dict | None = None
    #: read from the calibration store instead of computed
    reused_calibration: bool = False
    #: this process's global rank (every rank holds the same reduced results; rank 0 should write them)
    rank: int = 0
    #: FSDP: the plain, full model rank 0 gathered after calibration, which the later stages use instead of
    #: the (now sharded) one calibrated; None otherwise and on the other ranks, whose ``scores`` are empty
    model: torch.nn.Module | None = field(default=None, repr=False)

    @property
    def tokens_per_s(self) -> float:
        """Calibration throughput (tokens per second of the pass)."""
        return self.tokens / self.seconds if self.seconds > 0 else 0.0

    def record(self) -> dict:
        """run.json's ``calibration`` section."""
        out = {"batches": self.batches, "tokens": self.tokens, "seconds": self.seconds,
               "tokens_per_s": self.tokens_per_s, "mean_loss": self.mean_loss, **self._how()}
        if self.windows is not None:
            out["windows"] = self.windows
        if self.reused_calibration:
            out["reused_calibration"] = True
        return out

    def _how(self) -> dict:
        return {name: getattr(self, name) for name in _HOW}

    def to_json(self) -> dict:
        """Everything but the scores and the model, as JSON (the calibration store keeps it beside the scores)."""
        return {"layer_stats": self.layer_stats, "batches": self.batches, "tokens": self.tokens,
                "seconds": self.seconds, "mean_loss": self.mean_loss,
                "info": {**self._how(), **({"windows": self.windows} if self.windows is not None else {})}}

    @classmethod
    def from_json(cls, scores: dict[str, Scores], meta: dict, **changes) -> CalibrationResult:
        """The result :meth:`to_json` stored, with ``scores``; ``changes``: fields to set (``reused_calibration``)."""
        info = {k: v for k, v in meta.get("info", {}).items() if k in _HOW or k == "windows"}
        return cls(scores=scores, layer_stats=meta["layer_stats"], batches=meta["batches"], tokens=meta["tokens"],
                   seconds=meta["seconds"], mean_loss=meta["mean_loss"], **info, **changes)


#: the fields that say how the pass ran, in run.json's order
_HOW = ("backward", "activations", "per_sample", "micro_batch_size", "world_size", "device",
        "gradient_checkpointing", "mean_gradient", "strategy", "loss_per_micro_batch")


@dataclass(frozen=True)
class Needs:
    """What the pass must run for its estimators and collectors."""

    #: a backward pass with gradient hooks
    gradients: bool
    #: forward pre-hooks on the Linears' inputs
    activations: bool
    #: micro-batches of one sample
    per_sample: bool
    #: activation checkpointing of each decoder layer (asked for, and there is a backward to save memory in)
    checkpointing: bool

    @classmethod
    def of(cls, plugins: list[CalibrationPlugin], checkpointing: bool) -> Needs:
        """What ``plugins`` (estimators and collectors) read."""
        grads = any(p.needs_gradients for p in plugins)
        return cls(grads, any(p.needs_activations for p in plugins), any(p.per_sample for p in plugins),
                   checkpointing and grads)

    @property
    def any(self) -> bool:
        """Whether the model runs at all."""
        return self.gradients or self.activations


class CalibrationModule(L.LightningModule):
    """Runs forward (+ manual backward) per micro-batch; all the work happens in the hooks.

    The transformers model is held outside this module's tree (not a submodule), so Lightning neither
    moves it (its teardown would ``.cpu()`` a 7B model after ``fit``) nor converts it (``bf16-true``
    would cast buffers such as RoPE ``inv_freq``): it stays on the device and in the dtype it was loaded
    with, which the dense and the pruned evaluation use too.
    """

    def __init__(self, model: torch.nn.Module, batches: list[torch.Tensor], dispatcher: HookDispatcher | None,
                 needs: Needs, strategy: CalibrationStrategy | None = None, layers: list[LayerModules] | None = None,
                 shards_from=None) -> None:
        super().__init__()
        self._held = (model,)
        self.needs = needs
        #: the passes of each step, and the set-up of the model inside ``configure_model`` (FSDP: shard it,
        #: read the shards)
        self.strategy = strategy or CalibrationStrategy(None)
        self.layers = layers
        #: FSDP from the meta device: the checkpoint each rank reads its shards from once sharded
        self.shards_from = shards_from
        self.batches = batches
        self.dispatcher = dispatcher
        self.automatic_optimization = False
        self.losses: list[float] = []  # on the host as far as the last flush (the progress view shows the last)
        self.sizes: list[int] = []  # samples per micro-batch: the mean loss is a mean over samples

    @property
    def model(self) -> torch.nn.Module:
        """The model being calibrated."""
        return self._held[0]

    def release(self) -> None:
        """Let go of the model, the micro-batches and the hook dispatcher (with its buffers): the Trainer
        holds this module in a reference cycle, which must not keep them alive after calibration."""
        self._held = ()
        self.batches = []
        self.dispatcher = None
        self.shards_from = None
        self.layers = None

    def configure_optimizers(self):  # noqa: D102 - calibration updates no weights
        return None

    def configure_model(self) -> None:
        """The strategy prepares the held model (FSDP: shards it over the device mesh; a model on the meta
        device then reads this rank's shards from the checkpoint)."""
        if self.strategy.sharded:
            self.strategy.configure_model(self.model, self.layers, self.device_mesh["data_parallel"],
                                          self.shards_from, self.trainer.strategy.root_device)

    def train_dataloader(self):
        """This rank's share of the micro-batches (batch-level sharding keeps DDP sums exact)."""
        rank, world = self.trainer.global_rank, self.trainer.world_size
        if len(self.batches) < world:
            raise CalibrationError(f"{len(self.batches)} calibration micro-batches cannot be shared by {world} "
                                   f"processes: use at least {world} (num_samples / batch_size) or fewer devices")
        shard = self.batches[rank::world]
        # Lightning broadcasts a SIGTERM flag at every step, so all ranks must take the same number of
        # steps: a shorter shard is padded with empty batches, which training_step skips (DDP) or runs
        # as padding passes (FSDP, whose every forward and backward is a collective)
        steps = -(-len(self.batches) // world)
        shard += [self.batches[0][:0]] * (steps - len(shard))
        return torch.utils.data.DataLoader(shard, batch_size=None, shuffle=False)

    def training_step(self, batch: torch.Tensor, batch_idx: int) -> None:
        calibration_mode(self.model, self.needs.checkpointing)
        for ids, reference in self.strategy.passes(self.batches, batch, batch_idx, self.trainer.world_size,
                                                   self.needs.per_sample):
            if ids is None:  # FSDP: a pass that keeps this rank in step with the others, worth nothing
                self.dispatcher.begin_pass(0, reference)
                with self.dispatcher.padding_pass():
                    self._pass(self.batches[0][:1].to(self.trainer.strategy.root_device))
                continue
            self.dispatcher.begin_pass(ids.shape[0], reference)
            self.dispatcher.begin_batch(ids.shape[0])
            if self.needs.gradients:
                with self.dispatcher.forward_pass():
                    loss = self.model(input_ids=ids, labels=ids, use_cache=False).loss
                self.manual_backward(loss)
            else:
                with torch.no_grad(), self.dispatcher.forward_pass():
                    loss = self.model(input_ids=ids, labels=ids, use_cache=False).loss
            self.dispatcher.end_batch(loss)
            self.sizes.append(ids.shape[0])
            # the spent graph's root still pins some activations: drop it before the next forward
            del loss
            if self.dispatcher.due():  # the loop's only host synchronisation, once per check_every micro-batches
                self.losses += self.dispatcher.flush()

    def on_train_epoch_end(self) -> None:
        """The last micro-batches' losses and finiteness check."""
        self.losses += self.dispatcher.flush()

    def _pass(self, ids: torch.Tensor) -> None:
        """One uncounted forward (and backward) pass; its gradients are zero (the loss times 0), so that FSDP's
        reduce-scatter of the other ranks' gradients adds nothing of this rank's."""
        if self.needs.gradients:
            self.manual_backward(self.model(input_ids=ids, labels=ids, use_cache=False).loss * 0.0)
        else:
            with torch.no_grad():
                self.model(input_ids=ids, labels=ids, use_cache=False)


@dataclass
class _Pass:
    """What the Lightning pass leaves: the sample-weighted loss sum, the samples, the processes, this rank,
    (FSDP, rank 0) the gathered model, the losses and the seconds."""

    loss_sum: float = 0.0
    n_samples: int = 0
    world: int = 1
    rank: int = 0
    model: torch.nn.Module | None = None
    #: this rank's losses, in order, and the pass's seconds
    losses: list[float] = field(default_factory=list)
    seconds: float = 0.0


def calibrate(model: torch.nn.Module, layers: list[LayerModules], input_ids: torch.Tensor, batch_size: int,
              estimators: dict[str, ImportanceEstimator], collectors: list[StatCollector], trainer_cfg,
              progress=None, gradient_checkpointing: bool = False, shards_from=None,
              gather_to: str | None = None, check_every: int = CHECK_EVERY,
              mean_gradient: str = "device") -> CalibrationResult:
    """Run calibration and return every estimator's scores and every collector's per-layer values.

    The model must already be on the device ``trainer_cfg`` selects (:func:`gradprune.trainer.run_device`);
    it is neither moved nor converted, and stays there afterwards. Under FSDP it may instead be on the meta
    device with ``shards_from`` (a :class:`gradprune.models.shard_loading.CheckpointIndex`): each rank then
    reads only its shards once the model is sharded. ``gather_to``: where rank 0 puts the full model it
    gathers after FSDP calibration (default: its own device). ``check_every``: micro-batches between two
    host-side looks at the losses and gradient norms (the loop's only synchronisations with the device).
    ``mean_gradient``: where the fp32 sums behind G and F (:mod:`gradprune.moments`) live, ``device`` (the
    default) or ``host`` (the same fp32 sums in host memory, for a GPU too small for them).
    Nothing of the pass (Trainer, module, hooks, buffers, the estimators' accumulators) outlives the call.
    """
    from gradprune.trainer import build_trainer

    strategy, plugins = strategy_for(trainer_cfg), [*estimators.values(), *collectors]
    needs = Needs.of(plugins, gradient_checkpointing)
    trainer = build_trainer(trainer_cfg, [progress] if progress is not None else []) if needs.any else None
    device = _compute_device(model, trainer, strategy, shards_from)
    dispatcher = hook_dispatcher(layers, list(estimators.values()), collectors, device, strategy, check_every,
                                 mean_gradient)
    batches = list(input_ids.split(batch_size))
    module = CalibrationModule(model, batches, dispatcher, needs, strategy, layers, shards_from)
    done = _run_pass(trainer, module, needs, gather_to)
    # FSDP: rank 0 alone holds the full weights the scores read
    scores, stats = _results(estimators, collectors, not strategy.sharded or done.model is not None)
    dispatcher.moments.clear()
    return CalibrationResult(
        scores=scores, layer_stats=stats, batches=len(batches) if needs.any else 0,
        tokens=int(input_ids.numel()) if needs.any else 0, seconds=done.seconds,
        mean_loss=done.loss_sum / done.n_samples if done.n_samples else None, backward=needs.gradients,
        activations=needs.activations, per_sample=needs.per_sample,
        micro_batch_size=1 if needs.per_sample else batch_size, world_size=done.world, device=str(device),
        gradient_checkpointing=needs.checkpointing,
        mean_gradient=mean_gradient if dispatcher.moments.keeps_grad else None,
        strategy=strategy.describe(done.world), loss_per_micro_batch=done.losses, rank=done.rank, model=done.model)


def _run_pass(trainer, module: CalibrationModule, needs: Needs, gather_to: str | None) -> _Pass:
    """The timed pass (none without a trainer: nothing to run); nothing of it may outlive it: the Trainer <->
    module cycle would hold the model, the dispatcher and its parameter-sized buffers until Python's cycle
    collector happened to run."""
    t0 = time.perf_counter()
    try:
        done = _fit(trainer, module, needs, gather_to) if trainer is not None else _Pass()
    finally:
        done_losses = list(module.losses)
        module.release()
        dismantle_trainer(trainer, module)
    done.losses, done.seconds = done_losses, time.perf_counter() - t0
    return done


def _compute_device(model: torch.nn.Module, trainer, strategy: CalibrationStrategy, shards_from) -> torch.device:
    """Where the pass computes: the model's device (under FSDP loading, on the meta device, the trainer's)."""
    device = next(model.parameters()).device
    if device.type == "meta":
        if shards_from is None or not strategy.sharded or trainer is None:
            raise CalibrationError("the model is on the meta device: only FSDP calibration can load its weights")
        device = trainer.strategy.root_device
    if trainer is not None:
        _check_device(device, trainer.strategy.root_device)
    return device


def _results(estimators: dict[str, ImportanceEstimator], collectors: list[StatCollector],
             scoring: bool) -> tuple[dict[str, Scores], dict[str, list[float]]]:
    """Every estimator's scores (when ``scoring``) and every collector's values; then the accumulators go."""
    try:
        scores = {name: _checked(name, e.scores()) for name, e in estimators.items()} if scoring else {}
        stats = {c.name: c.per_layer() for c in collectors}
    finally:
        for p in [*estimators.values(), *collectors]:  # the accumulators go now, not with the plugin
            p.release()
        free_device_cache()
    return scores, stats


def hook_dispatcher(layers: list[LayerModules], estimators: list[ImportanceEstimator],
                    collectors: list[StatCollector], device: torch.device, strategy: CalibrationStrategy | None = None,
                    check_every: int = CHECK_EVERY, mean_gradient: str = "device") -> HookDispatcher:
    """Set up the estimators and collectors for a pass over ``layers`` (gradients on ``device``) and the
    dispatcher their hooks feed, with the mean gradient G and mean square F kept once if some plugin reads
    them (``mean_gradient``: G's sums on the ``device`` or the ``host``)."""
    plugins = [*estimators, *collectors]
    for p in plugins:
        p.setup(layers, device)
    reads = set().union(*(p.reads for p in plugins))
    moments = MeanMoments("mean_gradient" in reads, "mean_square" in reads, on_host=mean_gradient == "host")
    sharded = strategy is not None and strategy.sharded
    return HookDispatcher(layers, plugins, max(lm.index for lm in layers) + 1, moments, check_every,
                          sharded=sharded, scatter_rows=strategy.scatter_rows if sharded else None)


def _fit(trainer: L.Trainer, module: CalibrationModule, needs: Needs, gather_to: str | None) -> _Pass:
    """The Lightning pass with every hook registered (and removed after), then the cross-process reduction
    and (FSDP) the gather of the full model on rank 0."""
    dispatcher, model, layers, strategy = module.dispatcher, module.model, module.layers, module.strategy
    with contextlib.ExitStack() as stack:
        register_hooks(stack, model, layers, dispatcher, needs.gradients, needs.activations, strategy)
        if needs.checkpointing:
            stack.enter_context(activation_checkpointing(model))
        stack.callback(model.eval)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*configure_optimizers.*returned.*None.*")
            warnings.filterwarnings("ignore", category=FutureWarning, message=".*LeafSpec.*")
            warnings.filterwarnings("ignore", message=".*does not have many workers.*")
            # calibration keeps the model in eval mode on purpose (dropout off)
            warnings.filterwarnings("ignore", message=".*module\\(s\\) in eval mode.*")
            trainer.fit(module)
        counts = torch.tensor([sum(x * n for x, n in zip(module.losses, module.sizes, strict=True)),
                               sum(module.sizes)], dtype=torch.float64)
        strategy.combine(dispatcher.plugins, dispatcher.moments, counts, layers, trainer.strategy.root_device)
        done = _Pass(float(counts[0]), int(counts[1]), trainer.world_size, trainer.global_rank)
    done.model = _gather_for_scoring(strategy, model, dispatcher.plugins, gather_to)
    return done


def _gather_for_scoring(strategy: CalibrationStrategy, model: torch.nn.Module, plugins: list[CalibrationPlugin],
                        device: str | None = None) -> torch.nn.Module | None:
    """FSDP: the full model on rank 0, whose layers the plugins then read their weights from."""
    from gradprune.models.adapters import get_adapter

    plain = strategy.gather(model, device)
    if plain is not None:
        layers = get_adapter(plain).layers(plain)
        for p in plugins:
            p.layers = layers
    return plain


def _check_device(model_device: torch.device, root: torch.device) -> None:
    """Calibration computes where the model is; a model elsewhere than the trainer's device is a set-up error."""
    def norm(d: torch.device) -> tuple[str, int]:
        return d.type, (d.index or 0) if d.type != "cpu" else 0

    if norm(model_device) != norm(root):
        raise CalibrationError(
            f"the model is on {model_device} but trainer.accelerator/devices select {root}: load the model "
            f"onto gradprune.trainer.run_device(recipe.trainer) (gradprune run does)")


def calibration_mode(model: torch.nn.Module, checkpointing: bool) -> None:
    """Every module in eval mode (dropout off); with checkpointing, only the decoder layers' own flag is
    set to training, which is what transformers checks before checkpointing a layer (their attention and
    MLP submodules, and so dropout, stay in eval mode)."""
    model.eval()
    if checkpointing:
        from transformers.modeling_layers import GradientCheckpointingLayer

        for m in model.modules():
            if isinstance(m, GradientCheckpointingLayer):
                m.training = True


@contextlib.contextmanager
def activation_checkpointing(model: torch.nn.Module):
    """transformers' activation (gradient) checkpointing of every decoder layer, non-reentrant, inside."""
    if not getattr(model, "supports_gradient_checkpointing", False):
        raise CalibrationError(f"calibration.gradient_checkpointing: {type(model).__name__} does not support it")
    kwargs = {"use_reentrant": False}  # the reentrant variant needs inputs that require grad; ours do not
    if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.2x (the old name is deprecated)
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
        disable = model.activation_checkpointing_disable
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
        disable = model.gradient_checkpointing_disable
    try:
        yield
    finally:
        disable()


def _checked(name: str, scores: Scores) -> Scores:
    """Scores must be finite: a NaN would silently corrupt the ranking."""
    for (layer, kind), s in scores.items():
        if not bool(torch.isfinite(s).all()):
            raise CalibrationError(f"importance {name!r}: non-finite score in layer {layer} ({kind})")
    return scores
