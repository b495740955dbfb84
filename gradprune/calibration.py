"""Calibration: one Lightning ``fit`` pass (manual backward, no optimizer) over the calibration windows.

The hooks (:mod:`gradprune.hooks`) do the work: each prunable weight's gradient goes to every estimator
and collector and is freed at once. Parameters outside the prunable groups get no gradient at all.
The model stays on the device and in the dtype it was loaded with; with gradient checkpointing each
decoder layer is recomputed in the backward pass. Accumulators are combined across DDP ranks once.
"""

from __future__ import annotations

import contextlib
import time
import warnings
from dataclasses import dataclass, field

import lightning as L
import torch

from gradprune.errors import CalibrationError
from gradprune.hooks import CHECK_EVERY, HookDispatcher, register_hooks
from gradprune.importance.base import ImportanceEstimator, Scores
from gradprune.memory.release import dismantle_trainer, free_device_cache
from gradprune.models.adapters import LayerModules
from gradprune.stats.gradient import StatCollector


@dataclass
class CalibrationResult:
    """What calibration hands to planning and recording: scores, per-layer stats, throughput."""

    scores: dict[str, Scores]
    layer_stats: dict[str, list[float]]
    batches: int = 0
    tokens: int = 0
    seconds: float = 0.0
    mean_loss: float | None = None
    info: dict = field(default_factory=dict)
    #: this process's global rank (every rank holds the same reduced results; rank 0 should write them)
    rank: int = 0
    #: FSDP: the plain, full model rank 0 gathered after calibration, which the later stages use instead of
    #: the (now sharded) one calibrated; None otherwise and on the other ranks, whose ``scores`` are empty
    model: torch.nn.Module | None = field(default=None, repr=False)

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else 0.0


class CalibrationModule(L.LightningModule):
    """Runs forward (+ manual backward) per micro-batch; all the work happens in the hooks.

    The transformers model is held outside this module's tree (not a submodule), so Lightning neither
    moves it (its teardown would ``.cpu()`` a 7B model after ``fit``) nor converts it (``bf16-true``
    would cast buffers such as RoPE ``inv_freq``): it stays on the device and in the dtype it was loaded
    with, which the dense and the pruned evaluation use too.
    """

    def __init__(self, model: torch.nn.Module, batches: list[torch.Tensor], dispatcher: HookDispatcher,
                 backward: bool, per_sample: bool, checkpointing: bool = False,
                 shard_layers: list[LayerModules] | None = None, weights=None) -> None:
        super().__init__()
        self._held = (model,)
        #: FSDP: the prunable layers whose decoder layers ``configure_model`` shards (None: not sharded)
        self.shard_layers = shard_layers
        #: FSDP from the meta device: the checkpoint index each rank reads its shards from once sharded
        self.weights = weights
        self.checkpointing = checkpointing
        self.batches = batches
        self.dispatcher = dispatcher
        self.do_backward = backward
        self.per_sample = per_sample
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
        self.weights = None
        self.shard_layers = None

    def configure_optimizers(self):  # noqa: D102 - calibration updates no weights
        return None

    def configure_model(self) -> None:
        """Under FSDP (Lightning's model-parallel strategy): shard the held model over the device mesh; a
        model on the meta device then reads this rank's shards from the checkpoint."""
        if self.shard_layers is not None:
            from gradprune.sharding import shard

            shard(self.model, self.shard_layers, self.device_mesh["data_parallel"])
            if self.weights is not None:
                from gradprune.models.shard_loading import load_local_shards

                load_local_shards(self.model, self.weights, self.trainer.strategy.root_device)

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

    def _passes(self, batch: torch.Tensor) -> int:
        return batch.shape[0] if self.per_sample else int(batch.numel() > 0)

    def _padding_passes(self, batch: torch.Tensor, batch_idx: int) -> int:
        """FSDP: how many passes this rank adds to this step so that every rank runs as many as the most."""
        if self.shard_layers is None:
            return 0
        world = self.trainer.world_size
        step = self.batches[batch_idx * world:(batch_idx + 1) * world]
        return max(self._passes(b) for b in step) - self._passes(batch)

    def training_step(self, batch: torch.Tensor, batch_idx: int) -> None:
        calibration_mode(self.model, self.checkpointing)
        for _ in range(self._padding_passes(batch, batch_idx)):
            with self.dispatcher.padding_pass():
                self._pass(self.batches[0][:1].to(self.trainer.strategy.root_device))
        if batch.numel() == 0:
            return  # padding of a shorter shard
        chunks = batch.split(1) if self.per_sample else (batch,)
        for ids in chunks:
            self.dispatcher.begin_batch(ids.shape[0])
            if self.do_backward:
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
        """One uncounted forward (and backward) pass."""
        if self.do_backward:
            self.manual_backward(self.model(input_ids=ids, labels=ids, use_cache=False).loss)
        else:
            with torch.no_grad():
                self.model(input_ids=ids, labels=ids, use_cache=False)


def calibrate(model: torch.nn.Module, layers: list[LayerModules], input_ids: torch.Tensor, batch_size: int,
              estimators: dict[str, ImportanceEstimator], collectors: list[StatCollector], trainer_cfg,
              progress=None, gradient_checkpointing: bool = False, weights=None,
              gather_to: str | None = None, check_every: int = CHECK_EVERY,
              mean_gradient: str = "device") -> CalibrationResult:
    """Run calibration and return every estimator's scores and every collector's per-layer values.

    The model must already be on the device ``trainer_cfg`` selects (:func:`gradprune.trainer.run_device`);
    it is neither moved nor converted, and stays there afterwards. Under FSDP it may instead be on the meta
    device with ``weights`` (a :class:`gradprune.models.shard_loading.CheckpointIndex`): each rank then
    reads only its shards once the model is sharded. ``gather_to``: where rank 0 puts the full model it
    gathers after FSDP calibration (default: its own device). ``check_every``: micro-batches between two
    host-side looks at the losses and gradient norms (the loop's only synchronisations with the device).
    ``mean_gradient``: where the statistics' fp32 mean-gradient buffer lives, ``device`` (exact, the
    default) or ``host`` (the same fp32 sums in host memory, for a GPU too small for the buffer;
    element-level Taylor then keeps its own Σg on the device).
    Nothing of the pass (Trainer, module, hooks, buffers, the estimators' accumulators) outlives the call.
    """
    from gradprune.parallel import is_fsdp
    from gradprune.trainer import build_trainer

    ests = list(estimators.values())
    grads = bool(collectors) or any(e.needs_gradients for e in ests)
    acts = any(e.needs_activations for e in ests)
    sharded = is_fsdp(trainer_cfg)
    if sharded:
        _check_group_level(estimators)
    trainer = build_trainer(trainer_cfg, [progress] if progress is not None else []) if grads or acts else None
    device = next(model.parameters()).device
    if device.type == "meta":
        if weights is None or not sharded or trainer is None:
            raise CalibrationError("the model is on the meta device: only FSDP calibration can load its weights")
        device = trainer.strategy.root_device
    dispatcher = hook_dispatcher(layers, ests, collectors, device,
                                 sharded_over=trainer.world_size if sharded and trainer is not None else 0,
                                 check_every=check_every, mean_gradient=mean_gradient)
    batches = list(input_ids.split(batch_size))
    per_sample = any(e.per_sample for e in ests)
    checkpointing = gradient_checkpointing and grads
    module = CalibrationModule(model, batches, dispatcher, backward=grads, per_sample=per_sample,
                               checkpointing=checkpointing, shard_layers=layers if sharded else None,
                               weights=weights)
    t0 = time.perf_counter()
    gathered = None
    try:
        if trainer is not None:
            loss_sum, n_done, world, rank, gathered = _fit(trainer, module, model, layers, dispatcher, ests,
                                                           collectors, grads, acts, sharded, checkpointing,
                                                           device, gather_to)
        else:
            loss_sum, n_done, world, rank = 0.0, 0, 1, 0
    finally:
        losses = list(module.losses)
        # nothing of the pass may outlive it: the Trainer <-> module cycle would hold the model, the
        # dispatcher and its parameter-sized buffers until Python's cycle collector happened to run
        module.release()
        dismantle_trainer(trainer, module)
        del trainer, module
    seconds = time.perf_counter() - t0
    scoring = not sharded or gathered is not None  # FSDP: rank 0 alone holds the full weights scores read
    try:
        scores = {name: _checked(name, e.scores()) for name, e in estimators.items()} if scoring else {}
        stats = {c.name: c.per_layer() for c in collectors}
    finally:
        for e in ests:  # the accumulators (parameter-sized at element level) go now, not with the estimator
            e.release()
        if dispatcher.mean_grad is not None:  # an estimator may still point at the buffer: empty it
            dispatcher.mean_grad.sums.clear()
        del dispatcher
        free_device_cache()
    return CalibrationResult(
        scores=scores, layer_stats=stats, batches=len(batches) if (grads or acts) else 0,
        tokens=int(input_ids.numel()) if (grads or acts) else 0, seconds=seconds,
        mean_loss=loss_sum / n_done if n_done else None,
        info={"backward": grads, "activations": acts, "per_sample": per_sample, "micro_batch_size":
              1 if per_sample else batch_size, "world_size": world, "device": str(device),
              "gradient_checkpointing": checkpointing, "mean_gradient":
              mean_gradient if any(c.uses_mean_gradient for c in collectors) else None,
              "strategy": "fsdp" if sharded else ("ddp" if world > 1 else "single"),
              "loss_per_micro_batch": losses},  # this rank's, in order (trackers plot them)
        rank=rank, model=gathered,
    )


def hook_dispatcher(layers: list[LayerModules], estimators: list[ImportanceEstimator],
                    collectors: list[StatCollector], device: torch.device, sharded_over: int = 0,
                    check_every: int = CHECK_EVERY, mean_gradient: str = "device") -> HookDispatcher:
    """Set up the estimators and collectors for a pass over ``layers`` (gradients on ``device``) and the
    dispatcher their hooks feed; estimators that can read the collectors' mean-gradient buffer share it."""
    for e in estimators:
        e.setup(layers)
    for c in collectors:
        c.setup(layers, device)
    n_layers = max(lm.index for lm in layers) + 1
    dispatcher = HookDispatcher(layers, estimators, collectors, n_layers, sharded_over=sharded_over,
                                check_every=check_every, mean_gradient=mean_gradient)
    if dispatcher.mean_grad is not None and not dispatcher.mean_grad.on_host:
        for e in estimators:  # one fp32 copy of the mean gradient, not two
            if hasattr(e, "share_mean_gradient"):
                e.share_mean_gradient(dispatcher.mean_grad)
    return dispatcher


def _fit(trainer: L.Trainer, module: CalibrationModule, model: torch.nn.Module, layers: list[LayerModules],
         dispatcher: HookDispatcher, ests: list[ImportanceEstimator], collectors: list[StatCollector],
         grads: bool, acts: bool, sharded: bool, checkpointing: bool, device: torch.device,
         gather_to: str | None) -> tuple[float, int, int, int, torch.nn.Module | None]:
    """The Lightning pass with every hook registered (and removed after), then the cross-process reduction;
    returns the loss sum, the sample count, the world size, this rank and (FSDP, rank 0) the gathered model."""
    with contextlib.ExitStack() as stack:
        _check_device(device, trainer.strategy.root_device)
        register_hooks(stack, model, layers, dispatcher, grads, acts, sharded=sharded)
        if checkpointing:
            stack.enter_context(activation_checkpointing(model))
        stack.callback(model.eval)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*configure_optimizers.*returned.*None.*")
            warnings.filterwarnings("ignore", category=FutureWarning, message=".*LeafSpec.*")
            warnings.filterwarnings("ignore", message=".*does not have many workers.*")
            # calibration keeps the model in eval mode on purpose (dropout off)
            warnings.filterwarnings("ignore", message=".*module\\(s\\) in eval mode.*")
            trainer.fit(module)
        loss_sum, n_done = _all_reduce(trainer, ests, collectors, dispatcher, module.losses, module.sizes)
        dispatcher.summarize()
        world, rank = trainer.world_size, trainer.global_rank
    gathered = _gather_for_scoring(model, ests, gather_to) if sharded else None
    return loss_sum, n_done, world, rank, gathered


def _check_group_level(estimators: dict[str, ImportanceEstimator]) -> None:
    from gradprune.sharding import ELEMENT_LEVEL_REFUSAL

    for name, e in estimators.items():
        if e.element_state:
            raise CalibrationError(f"importance {name!r} {ELEMENT_LEVEL_REFUSAL}")


def _gather_for_scoring(model: torch.nn.Module, ests: list[ImportanceEstimator],
                        device: str | None = None) -> torch.nn.Module | None:
    """FSDP: the full model on rank 0, whose layers the estimators then read their weights from."""
    from gradprune.models.adapters import get_adapter
    from gradprune.sharding import gather_full_model

    plain = gather_full_model(model, device)
    if plain is not None:
        layers = get_adapter(plain).layers(plain)
        for e in ests:
            e.rebind(layers)
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


def _all_reduce(trainer: L.Trainer, ests: list[ImportanceEstimator], collectors: list[StatCollector],
                dispatcher: HookDispatcher, losses: list[float], sizes: list[int]) -> tuple[float, int]:
    """Combine accumulators across processes once, at the end (no gradient sync during calibration).

    Returns the sample-weighted loss sum and the sample count over all ranks. Every rank must hold the same
    accumulators (same names, shapes): checked first, since a mismatched collective would hang or mix
    unrelated tensors.
    """
    loss_sum, n_samples = sum(x * n for x, n in zip(losses, sizes, strict=True)), sum(sizes)
    if trainer.world_size <= 1:
        return loss_sum, n_samples
    import torch.distributed as dist

    tensors: list[tuple[str, torch.Tensor, str]] = []
    for i, e in enumerate(ests):
        tensors += [(f"e{i}:{k}", t, "sum") for k, t in sorted(e.state().items())]
    for i, c in enumerate(collectors):
        tensors += [(f"c{i}:{k}", t, op) for k, (t, op) in sorted(c.state().items())]
    if dispatcher.mean_grad is not None:
        tensors += [(f"m:{k}", t, op) for k, (t, op) in dispatcher.mean_grad.state().items()]
    layout = [(name, tuple(t.shape), op) for name, t, op in tensors]
    every = [None] * trainer.world_size
    dist.all_gather_object(every, layout)
    if any(other != layout for other in every):
        raise CalibrationError("DDP calibration: ranks hold different accumulators (a rank saw no micro-batch?)")
    # NCCL reduces device tensors only; small CPU counters travel through the strategy's device
    device = trainer.strategy.root_device
    for _, t, op in tensors:
        buf = t if t.device == device else t.to(device)
        dist.all_reduce(buf, op=dist.ReduceOp.MAX if op == "max" else dist.ReduceOp.SUM)
        if buf is not t:
            t.copy_(buf)
    loss = torch.tensor([loss_sum, n_samples], dtype=torch.float64, device=device)
    dist.all_reduce(loss, op=dist.ReduceOp.SUM)
    return float(loss[0]), int(loss[1])


def _checked(name: str, scores: Scores) -> Scores:
    """Scores must be finite: a NaN would silently corrupt the ranking."""
    for (layer, kind), s in scores.items():
        if not bool(torch.isfinite(s).all()):
            raise CalibrationError(f"importance {name!r}: non-finite score in layer {layer} ({kind})")
    return scores
