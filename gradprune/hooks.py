"""Calibration's hooks: where each prunable weight's gradient and each Linear's input goes.

A post-accumulate gradient hook on every prunable weight hands this rank's micro-batch gradient to every
plugin that reads gradients and to the mean moments (:mod:`gradprune.moments`), then frees it, so no
parameter-sized gradient outlives its hook. Under FSDP the hook sits on the unsharded weight and leaves
the gradient to FSDP's reduce-scatter when the mean gradient is kept; a second hook on the sharded weight
takes the rows each rank receives (:class:`gradprune.strategy.FullyShardedDataParallel`). Forward
pre-hooks on the Linears some plugin reads the input of (``input_roles``) feed them during the forward
pass only (not checkpointing's recomputation). Every hook is registered on an ``ExitStack`` and removed
with it, also when calibration raises.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable

import torch

from gradprune.calibration_plugin import INPUT_ROLES, CalibrationPlugin, dispatching, fp32_norm
from gradprune.errors import CalibrationError
from gradprune.models.adapters import LayerModules
from gradprune.moments import MeanMoments

#: micro-batches between two looks at the losses and gradient norms from the host (and once at the end):
#: the only host-device synchronisations of the calibration loop
CHECK_EVERY = 16


class HookDispatcher:
    """Routes gradients and inputs from the hooks to the plugins and the mean moments; checks finiteness.

    Every gradient's fp32 norm is written into this micro-batch's slot for its weight (one read of the
    gradient; plugins get it free through :func:`gradprune.calibration_plugin.grad_norm`): the finiteness
    check comes from it. Losses and per-layer norms stay on the device until :meth:`flush` (every
    ``check_every`` micro-batches and at the end) moves them to the host in one transfer and fails on the
    first non-finite one, naming its layer and micro-batch.

    ``sharded`` (FSDP): the moments are filled by rows (``on_shard`` and ``scatter_rows``, a reduce-scatter
    of a whole tensor to this rank's rows), and each pass says its samples and the step's reference count
    (:meth:`begin_pass`): FSDP sums the ranks' gradients, so a rank whose micro-batch is smaller than the
    reference scales its gradient by n/n_ref after the plugins saw it, and a padding pass contributes zero.
    """

    def __init__(self, layers: list[LayerModules], plugins: list[CalibrationPlugin], n_layers: int,
                 moments: MeanMoments | None = None, check_every: int = CHECK_EVERY, sharded: bool = False,
                 scatter_rows: Callable[[torch.Tensor], torch.Tensor] | None = None) -> None:
        self.layers = layers
        self.plugins = plugins
        self.moments = moments or MeanMoments(False, False)
        self.n_layers = n_layers
        self.check_every = check_every
        self.sharded, self.scatter_rows = sharded, scatter_rows
        # a linear plugin reads G instead of every gradient when G is kept anyway
        self.grad_plugins = [p for p in plugins
                             if "gradients" in p.reads and not (p.linear and self.moments.keeps_grad)]
        self.input_plugins = {role: [p for p in plugins if role in p.input_roles] for role in INPUT_ROLES}
        # one norm slot per prunable weight, refilled every micro-batch
        self.slots = {(lm.index, role): i for i, (lm, role) in
                      enumerate((lm, role) for lm in layers for role in lm.weights())}
        self._slot_layer = [key[0] for key in self.slots]
        self.norms: torch.Tensor | None = None
        self._slot_layer_t: torch.Tensor | None = None
        self._losses: list[torch.Tensor] = []
        self._layer_sq: list[torch.Tensor] = []
        self._flushed = 0  # micro-batches already checked
        # activation hooks count only the forward pass: checkpointing re-runs each layer's forward in backward
        self.in_forward = False
        # a padding pass (FSDP: every rank runs as many passes as the others) is computed but not observed
        self.padding = False
        self._n, self._ref = 1, 1  # this pass's samples and (FSDP) the reference the gradients are scaled to

    @property
    def input_roles(self) -> tuple[str, ...]:
        """The Linears whose inputs some plugin reads."""
        return tuple(role for role, ps in self.input_plugins.items() if ps)

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

    def begin_pass(self, n_samples: int, reference: int) -> None:
        """Before a forward/backward of ``n_samples`` (0: padding); FSDP sums every rank's gradient of this
        pass scaled to ``reference`` samples."""
        self._n, self._ref = n_samples, reference

    def begin_batch(self, n_samples: int) -> None:
        """Before a micro-batch's forward: its gradients will be the mean over ``n_samples`` samples."""
        self._n = n_samples
        for p in self.plugins:
            p.begin_batch(n_samples)
        if self.norms is not None:
            self.norms.zero_()  # a weight without a gradient in this micro-batch adds nothing

    def on_grad(self, layer: LayerModules, role: str, param: torch.Tensor) -> None:
        """Post-accumulate hook body: this rank's gradient to the plugins and the moments, then freed (also if a
        plugin raises) unless FSDP is to reduce-scatter it."""
        g = param.grad
        if g is None:
            return
        keep = self.sharded and self.moments.keeps_grad
        try:
            if not self.padding:
                self._observe(layer, role, param, g)
            if not self.sharded:
                self.moments.add((layer.index, role), g, float(self._n))
                return
            if self.moments.keeps_sq:  # every rank takes part, a padding pass with zeros
                gf = g.float()  # g itself when fp32: squared out of place, FSDP is still to reduce g
                sq = (gf * gf if gf is g else gf.square_()).mul_(float(self._n))
                self.moments.add_rows((layer.index, role), None, self.scatter_rows(sq))
            if keep and 0 < self._n != self._ref:
                g.mul_(self._n / self._ref)
        finally:
            dispatching(None)
            if not keep:
                param.grad = None

    def _observe(self, layer: LayerModules, role: str, param: torch.Tensor, g: torch.Tensor) -> None:
        if self.norms is None:
            self.norms = torch.zeros(len(self.slots), dtype=torch.float32, device=g.device)
        norm = fp32_norm(g, out=self.norms[self.slots[(layer.index, role)]])
        dispatching(g, norm)
        for p in self.grad_plugins:  # the same layer object for every plugin
            p.observe_grad(layer, role, param, g)

    def on_shard(self, layer: LayerModules, role: str, param: torch.Tensor) -> None:
        """FSDP, post-accumulate hook of the sharded weight: this rank's rows of the pass's gradient summed
        over the ranks (each scaled to the reference samples) into the mean gradient's sums; then freed."""
        g = param.grad
        param.grad = None
        if g is not None:
            self.moments.add_rows((layer.index, role), g.to_local() if hasattr(g, "to_local") else g, None,
                                  alpha=float(self._ref))

    def on_input(self, layer: LayerModules, role: str, x: torch.Tensor) -> None:
        """Forward pre-hook body for a Linear's input."""
        if not self.in_forward or self.padding:
            return  # a recomputation under gradient checkpointing (this batch was already seen), or padding
        for p in self.input_plugins[role]:
            p.observe_input(layer, role, x)

    def end_batch(self, loss: torch.Tensor | None) -> None:
        """After one micro-batch: keep its loss and per-layer Σ‖g‖² (on the device), let every plugin fold it."""
        if self.norms is not None:
            if self._slot_layer_t is None:
                self._slot_layer_t = torch.tensor(self._slot_layer, dtype=torch.long, device=self.norms.device)
            layer_sq = torch.zeros(self.n_layers, dtype=torch.float64, device=self.norms.device)
            layer_sq.index_add_(0, self._slot_layer_t, self.norms.double().square())
            self._layer_sq.append(layer_sq)
        if loss is not None:
            self._losses.append(loss.detach().reshape(()))
        for p in self.plugins:
            p.end_batch()

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


def register_hooks(stack: contextlib.ExitStack, model: torch.nn.Module, layers: list[LayerModules],
                   dispatcher: HookDispatcher, grads: bool, acts: bool, strategy=None) -> None:
    """Register every hook on ``stack``; grads only for prunable weights (restored afterwards), input hooks
    only on the Linears some plugin reads.

    Where the gradient hooks sit is the strategy's choice (default: one process, a hook on each weight;
    FSDP: on the unsharded and the sharded parameters, :class:`gradprune.strategy.FullyShardedDataParallel`).
    """
    from gradprune.strategy import CalibrationStrategy

    flags = {p: p.requires_grad for p in model.parameters()}
    stack.callback(lambda: [p.requires_grad_(f) for p, f in flags.items()])
    for p in model.parameters():
        p.requires_grad_(False)
    if grads:
        (strategy or CalibrationStrategy(None)).register_gradient_hooks(stack, model, layers, dispatcher)
    if acts:
        for lm in layers:
            for role in dispatcher.input_roles:
                pre = (lambda lm_, r_: lambda _m, args: dispatcher.on_input(lm_, r_, args[0]))(lm, role)
                stack.enter_context(getattr(lm, role).register_forward_pre_hook(pre))
