"""Calibration's hooks: where each prunable weight's gradient and each o/down input goes.

A post-accumulate gradient hook on every prunable weight hands the gradient to every importance
estimator, the shared mean-gradient buffer and every streaming collector, then frees it, so no
parameter-sized gradient outlives its hook. Forward pre-hooks on o_proj/down_proj feed activation
estimators during the forward pass only (not checkpointing's recomputation). Every hook is registered
on an ``ExitStack`` and removed with it, also when calibration raises.
"""

from __future__ import annotations

import contextlib
import math

import torch

from gradprune.errors import CalibrationError
from gradprune.importance.base import ImportanceEstimator
from gradprune.models.adapters import LayerModules
from gradprune.stats.gradient import MeanGradient, Moments, StatCollector, fp32_norm

#: micro-batches between two looks at the losses and gradient norms from the host (and once at the end):
#: the only host-device synchronisations of the calibration loop
CHECK_EVERY = 16


class HookDispatcher:
    """Routes gradients and activations from the hooks to estimators and collectors; checks finiteness.

    Every gradient's fp32 norm is written into this micro-batch's slot for its weight (one read of the
    gradient): the per-layer Σ‖g_b‖² the statistics need and the finiteness check come from it. Losses and
    per-layer norms stay on the device until :meth:`flush` (every ``check_every`` micro-batches and at the
    end) moves them to the host in one transfer and fails on the first non-finite one, naming its layer
    and micro-batch.
    """

    def __init__(self, layers: list[LayerModules], estimators: list[ImportanceEstimator],
                 collectors: list[StatCollector], n_layers: int, strategy=None,
                 check_every: int = CHECK_EVERY, mean_gradient: str = "device") -> None:
        self.layers = layers
        self.estimators = estimators
        self.collectors = collectors
        self.n_layers = n_layers
        self.check_every = check_every
        # one norm slot per prunable weight, refilled every micro-batch
        self.slots = {(lm.index, role): i for i, (lm, role) in
                      enumerate((lm, role) for lm in layers for role in lm.weights())}
        self._slot_layer = [key[0] for key in self.slots]
        self.norms: torch.Tensor | None = None
        self._slot_layer_t: torch.Tensor | None = None
        self._losses: list[torch.Tensor] = []
        self._layer_sq: list[torch.Tensor] = []
        self._flushed = 0  # micro-batches already checked
        # one shared mean-gradient buffer for every collector defined on it (under FSDP: one owner per layer)
        wanted = any(c.uses_mean_gradient for c in collectors)
        # mean_gradient "host": the buffer in host memory (the memory plan's choice for a GPU too small for it)
        self.mean_grad = MeanGradient(n_layers, strategy, on_host=mean_gradient == "host") if wanted else None
        self.streaming = [c for c in collectors if not c.uses_mean_gradient]
        # activation hooks count only the forward pass: checkpointing re-runs each layer's forward in backward
        self.in_forward = False
        # a padding pass (FSDP: every rank runs as many passes as the others) is computed but not counted
        self.padding = False

    @contextlib.contextmanager
    def padding_pass(self):
        """A forward/backward that only keeps this rank in step with the others: nothing is observed."""
        self.padding = True
        try:
            yield
        finally:
            self.padding = False

    @contextlib.contextmanager
    def forward_pass(self):
        """Marks the forward pass (activations seen outside it are checkpointing's recomputation)."""
        self.in_forward = True
        try:
            yield
        finally:
            self.in_forward = False

    def begin_batch(self, n_samples: int) -> None:
        """Before a micro-batch's forward: its gradients will be the mean over ``n_samples`` samples."""
        for est in self.estimators:
            est.begin_batch(n_samples)
        if self.mean_grad is not None:
            self.mean_grad.begin_batch(n_samples)
        if self.norms is not None:
            self.norms.zero_()  # a weight without a gradient in this micro-batch adds nothing

    def on_grad(self, layer: LayerModules, role: str, param: torch.Tensor) -> None:
        """Post-accumulate hook body: feed the gradient everywhere, then free it (also if a consumer raises)."""
        g = param.grad
        if g is None:
            return
        if self.padding:
            param.grad = None
            if self.mean_grad is not None:
                self.mean_grad.observe_padding(layer.index, role, g)
            return
        try:
            if self.norms is None:
                self.norms = torch.zeros(len(self.slots), dtype=torch.float32, device=g.device)
            norm = fp32_norm(g, out=self.norms[self.slots[(layer.index, role)]])
            for est in self.estimators:
                if est.needs_gradients:
                    est.observe_grad(layer, role, param, g)
            if self.mean_grad is not None:
                self.mean_grad.observe(layer.index, role, g)
            if self.streaming:
                m = Moments(g, norm)
                for col in self.streaming:  # the same layer object the estimators get
                    col.observe(layer, role, g, m)
        finally:
            param.grad = None

    def on_input(self, layer: LayerModules, role: str, x: torch.Tensor) -> None:
        """Forward pre-hook body for o_proj / down_proj inputs."""
        if not self.in_forward or self.padding:
            return  # a recomputation under gradient checkpointing (this batch was already seen), or padding
        for est in self.estimators:
            if est.needs_activations:
                est.observe_input(layer, role, x)

    def end_batch(self, loss: torch.Tensor | None) -> None:
        """After one micro-batch: keep its loss and per-layer Σ‖g‖² (on the device), let everyone fold it."""
        layer_sq = None
        if self.norms is not None:
            if self._slot_layer_t is None:
                self._slot_layer_t = torch.tensor(self._slot_layer, dtype=torch.long, device=self.norms.device)
            layer_sq = torch.zeros(self.n_layers, dtype=torch.float64, device=self.norms.device)
            layer_sq.index_add_(0, self._slot_layer_t, self.norms.double().square())
            self._layer_sq.append(layer_sq)
        if loss is not None:
            self._losses.append(loss.detach().reshape(()))
        for est in self.estimators:
            est.end_batch()
        if self.mean_grad is not None:
            self.mean_grad.end_batch(layer_sq)
        for col in self.streaming:
            col.end_batch()

    def due(self) -> bool:
        """Whether ``check_every`` micro-batches wait for :meth:`flush`."""
        return max(len(self._losses), len(self._layer_sq)) >= self.check_every

    def flush(self) -> list[float]:
        """The losses of the micro-batches since the last flush, on the host (one transfer for them and their
        gradient norms); a non-finite loss or gradient fails, naming the first micro-batch and layer."""
        losses, sqs = self._losses, self._layer_sq
        if not losses and not sqs:
            return []
        self._losses, self._layer_sq = [], []
        parts = [torch.stack(losses).double()] if losses else []
        parts += [torch.stack(sqs).reshape(-1)] if sqs else []
        host = torch.cat(parts).cpu().tolist()
        loss_vals, sq_vals = host[:len(losses)], host[len(losses):]
        for i in range(max(len(losses), len(sqs))):
            batch = self._flushed + i + 1
            if i < len(loss_vals) and not math.isfinite(loss_vals[i]):
                raise CalibrationError(f"calibration loss is {loss_vals[i]} (non-finite) in micro-batch {batch}: "
                                       f"check model.dtype / precision")
            row = sq_vals[i * self.n_layers:(i + 1) * self.n_layers]
            bad = [li for li, v in enumerate(row) if not math.isfinite(v)]
            if bad:
                raise CalibrationError(
                    f"non-finite (NaN/Inf) gradient first seen in layer {bad[0]}, micro-batch {batch}; try "
                    f"model.dtype=float32 or trainer.precision=32-true (fp16 overflows easily)")
        self._flushed += max(len(losses), len(sqs))
        return loss_vals

    def summarize(self) -> None:
        """After calibration (and the cross-process reduction): mean-gradient collectors take their values."""
        if self.mean_grad is None:
            return
        summary = self.mean_grad.summary()
        for col in self.collectors:
            if col.uses_mean_gradient:
                col.summarize(summary)


def register_hooks(stack: contextlib.ExitStack, model: torch.nn.Module, layers: list[LayerModules],
                   dispatcher: HookDispatcher, grads: bool, acts: bool, strategy=None) -> None:
    """Register every hook on ``stack``; grads only for prunable weights (restored afterwards).

    Where the gradient hooks sit is the strategy's choice (default: one process, a hook on each weight;
    FSDP: on the unsharded parameters it swaps in, :class:`gradprune.strategy.FullyShardedDataParallel`).
    """
    from gradprune.strategy import CalibrationStrategy

    flags = {p: p.requires_grad for p in model.parameters()}
    stack.callback(lambda: [p.requires_grad_(f) for p, f in flags.items()])
    for p in model.parameters():
        p.requires_grad_(False)
    if grads:
        (strategy or CalibrationStrategy(None)).register_gradient_hooks(stack, model, layers, dispatcher.on_grad)
    if acts:
        for lm in layers:
            for role, mod in (("o", lm.o), ("down", lm.down)):
                pre = (lambda lm_, r_: lambda _m, args: dispatcher.on_input(lm_, r_, args[0]))(lm, role)
                stack.enter_context(mod.register_forward_pre_hook(pre))
