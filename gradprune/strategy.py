"""How calibration runs on one process, on data-parallel ranks, or on FSDP shards: one object per strategy.

In the spirit of Lightning Fabric's ``Strategy``, every decision that depends on how the run is spread
over processes is a method of one object, and the stages ask it instead of testing the strategy name:

===========================  ==================  ===================  ===================================
question                     one process         ``ddp``              ``fsdp``
===========================  ==================  ===================  ===================================
how the model loads          whole, on the       whole, on this       on the meta device; each rank reads
(``load``)                   run's device        rank's device        its rows once sharded
which Lightning strategy     ``auto``            DDP without the      ``ModelParallelStrategy`` (FSDP2)
                                                 model wrapper
where gradient hooks sit     each weight         each weight          the unsharded weight (this rank's
(``register_gradient_hooks``)                                         micro-batch) and, when the mean
                                                                      gradient is kept, the sharded one
                                                                      (FSDP's reduce-scattered rows)
the passes of a step         the micro-batch     the micro-batch      as many on every rank (padding)
(``passes``)
how plugin state combines    as it is            all-reduce (sum,     all-reduce (sum, max); row shards
(``combine``)                                    max; rows summed)    concatenated (rows)
pieces of the mean gradient  the whole weight    the whole weight     this rank's rows
the model for evaluation     the calibrated one  the calibrated one   gathered whole on rank 0 (its host
(``gather``)                                                          when it is to be spread over GPUs)
===========================  ==================  ===================  ===================================

Plugins (estimators, collectors) never see any of this: they declare each accumulator's reduction
(:mod:`gradprune.calibration_plugin`) and the strategy applies it. Only this module and
:mod:`gradprune.sharding` (FSDP2's mechanics) call ``torch.distributed``.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import torch

from gradprune.errors import CalibrationError, RecipeError
from gradprune.parallel import (
    check_strategy_devices,
    device_count,
    settle_strategy,
    strategy_refusal,
)


@dataclass
class LoadedWeights:
    """What :meth:`CalibrationStrategy.load` returns: the model (on the meta device under FSDP loading),
    its tokenizer, the checkpoint its shards are read from (None: the model holds its weights) and how the
    weights were loaded ("full", "sharded", or "full (why not sharded)")."""

    model: Any
    tokenizer: Any
    shards_from: Any = None
    loading: str = "full"


def _distributed() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


class CalibrationStrategy:
    """One process: the model is whole on the run's device and nothing is exchanged."""

    #: recorded in run.json (``calibration.strategy``)
    kind = "single"
    #: the prunable weights are sharded over the ranks (each rank holds 1/N of every decoder layer)
    sharded = False

    def __init__(self, trainer_cfg: Any) -> None:
        self.trainer_cfg = trainer_cfg

    # -- the model ------------------------------------------------------------------------------------
    def load(self, section: Any, device: Any) -> LoadedWeights:
        """The recipe's model (``section``: ``recipe.model``) on ``device``, this process's device
        (:func:`gradprune.trainer.run_device`)."""
        from gradprune.models.loading import load_model

        model, tok = load_model(section, device)
        return LoadedWeights(model, tok)

    def configure_model(self, model: torch.nn.Module, layers: list, mesh: Any, shards_from: Any,
                        device: torch.device) -> None:
        """Inside Lightning's ``configure_model``: nothing to do on one process or under DDP."""

    def gather(self, model: torch.nn.Module, device: str | None = None) -> torch.nn.Module | None:
        """After calibration: the plain, whole model the later stages use instead of the calibrated one
        (None: keep using the calibrated one)."""
        return None

    # -- Lightning ------------------------------------------------------------------------------------
    def lightning(self) -> Any:
        """What ``lightning.Trainer(strategy=...)`` gets."""
        return "auto"

    # -- hooks and passes ------------------------------------------------------------------------------
    def register_gradient_hooks(self, stack: contextlib.ExitStack, model: torch.nn.Module, layers: list,
                                dispatcher: Any) -> None:
        """A post-accumulate hook on every prunable weight calls ``dispatcher.on_grad(layer, role, param)``;
        only those weights require a gradient while ``stack`` is open."""
        for lm in layers:
            for role, p in lm.weights().items():
                p.requires_grad_(True)
                hook = (lambda lm_, r_: lambda param: dispatcher.on_grad(lm_, r_, param))(lm, role)
                stack.enter_context(p.register_post_accumulate_grad_hook(hook))

    def passes(self, batches: list[torch.Tensor], batch: torch.Tensor, batch_idx: int, world: int,
               per_sample: bool) -> list[tuple[torch.Tensor | None, int]]:
        """This rank's forward/backward passes for ``batch`` (step ``batch_idx`` of ``batches`` shared by
        ``world`` ranks): ``(input ids, reference samples)``, input ids None for a padding pass."""
        if not batch.numel():  # a shorter shard's step (an empty tensor splits into one empty chunk)
            return []
        return [(ids, ids.shape[0]) for ids in (batch.split(1) if per_sample else (batch,))]

    # -- combining the plugins' state ------------------------------------------------------------------
    def combine(self, plugins: list, moments: Any, counts: torch.Tensor, layers: list,
                device: torch.device) -> None:
        """After the pass: every accumulator combined across processes (in place), the mean moments summed,
        then every plugin that reads them given the pieces of G and F. ``counts``: the sample-weighted
        loss sum and the samples of this process (summed too)."""
        self.reduce([*_plugin_entries(plugins), *moments.entries(), ("counts", counts, "sum")], device)
        self.observe_means(plugins, moments, layers, float(counts[1]), device)

    def reduce(self, entries: list[tuple[str, torch.Tensor, str]], device: torch.device) -> None:
        """Combine every ``(name, tensor, reduction)`` accumulator across processes, in place."""

    def observe_means(self, plugins: list, moments: Any, layers: list, n_samples: float,
                      device: torch.device) -> None:
        """Every piece of the mean gradient (and mean square) this process holds, to the plugins reading them."""
        grad_readers = [p for p in plugins if "mean_gradient" in p.reads or (p.linear and "gradients" in p.reads)]
        sq_readers = [p for p in plugins if "mean_square" in p.reads]
        if not (moments.any and (grad_readers or sq_readers)) or n_samples <= 0:
            return
        by_index = {lm.index: lm for lm in layers}
        for index, role in moments.weights():
            layer = by_index[index]
            weight = self.local_rows(layer.weights()[role])
            grad, sq = moments.piece((index, role), n_samples, weight.device)
            for p in plugins:
                if p in grad_readers or p in sq_readers:
                    p.observe_mean(layer, role, weight, grad if p in grad_readers else None,
                                   sq if p in sq_readers else None)

    def local_rows(self, param: torch.Tensor) -> torch.Tensor:
        """The rows of ``param`` this process holds (all of them here)."""
        return param.detach()

    # -- after calibration ----------------------------------------------------------------------------
    @property
    def rank(self) -> int:
        """This process's rank (0 on one process)."""
        import torch.distributed as dist

        return dist.get_rank() if _distributed() else 0

    @property
    def world_size(self) -> int:
        """How many processes calibrate together."""
        import torch.distributed as dist

        return dist.get_world_size() if _distributed() else 1

    def describe(self, world: int) -> str:
        """The strategy recorded in run.json for a pass over ``world`` processes."""
        return self.kind

    def release_ranks(self) -> None:
        """After calibration: this process's cached GPU memory goes back to the device and every rank waits
        until all have dropped their calibration state (so that what rank 0 reads as free memory, when it
        spreads the gathered model, is free)."""
        from gradprune.memory.release import free_device_cache

        free_device_cache()
        if _distributed():
            import torch.distributed as dist

            dist.barrier()


def _plugin_entries(plugins: list) -> list[tuple[str, torch.Tensor, str]]:
    """Every plugin's accumulators, named apart (``p<i>:<name>``), in a fixed order."""
    return [(f"p{i}:{k}", t, op) for i, p in enumerate(plugins) for k, (t, op) in sorted(p.state().items())]


class DataParallel(CalibrationStrategy):
    """``ddp``: every rank holds the whole model and calibrates its share of the micro-batches; the
    accumulators are all-reduced once at the end (no gradient synchronisation during the pass)."""

    kind = "ddp"
    #: ``rows`` accumulators are row shards to concatenate (FSDP), not replicas to sum
    concatenates_rows = False

    def lightning(self) -> Any:
        from lightning.pytorch.strategies import DDPStrategy

        class ShardedCalibrationStrategy(DDPStrategy):
            """DDP process group without the DDP model wrapper (accumulators are reduced by hand)."""

            def configure_ddp(self) -> None:
                # keep the plain LightningModule: no per-step gradient all-reduce is wanted
                pass

        return ShardedCalibrationStrategy(start_method="popen")

    def describe(self, world: int) -> str:
        return "ddp" if world > 1 else "single"

    def reduce(self, entries: list[tuple[str, torch.Tensor, str]], device: torch.device) -> None:
        """All-reduce each accumulator by its reduction (``rows``: summed, or under FSDP all-gathered in
        rank order). Every rank must hold the same accumulators (names, shapes but a row shard's rows):
        checked first, since a mismatched collective would hang or mix unrelated tensors."""
        if not _distributed():
            return
        import torch.distributed as dist

        def shape(t: torch.Tensor, op: str) -> tuple:
            return tuple(t.shape[1:]) if op == "rows" and self.concatenates_rows else tuple(t.shape)

        layout = [(name, shape(t, op), op) for name, t, op in entries]
        every: list = [None] * dist.get_world_size()
        dist.all_gather_object(every, [*layout, [t.shape[0] if t.dim() else 0 for _, t, _ in entries]])
        if any(other[:-1] != layout for other in every):
            raise CalibrationError(f"{self.kind.upper()} calibration: ranks hold different accumulators "
                                   f"(a rank saw no micro-batch?)")
        for i, (_, t, op) in enumerate(entries):
            # NCCL reduces device tensors only; small CPU counters travel through the strategy's device
            buf = t if t.device == device else t.to(device)
            if op == "rows" and self.concatenates_rows:
                from gradprune.sharding import all_gather_rows

                t.set_(all_gather_rows(buf, [other[-1][i] for other in every]).to(t.device))
                continue
            dist.all_reduce(buf, op=dist.ReduceOp.MAX if op == "max" else dist.ReduceOp.SUM)
            if buf is not t:
                t.copy_(buf)


class FullyShardedDataParallel(DataParallel):
    """``fsdp``: every decoder layer is sharded over the ranks (FSDP2), each rank calibrates its share of
    the micro-batches; see :mod:`gradprune.sharding`.

    Gradients go through FSDP's own reduce-scatter, as a SUM (its divide factor set to 1), in the gradient
    dtype: the hook on the unsharded weight shows the plugins this rank's whole gradient, then leaves it to
    FSDP, which hands each rank its rows of the sum over the ranks; a hook on the sharded weight adds those
    rows to the mean gradient's sums. Every rank runs as many passes per step (each forward and backward is
    a collective); the ranks' gradients of one pass are scaled to its largest micro-batch (a smaller one by
    n/n_ref, a padding pass to zero) so that the sum is Σ n·g / n_ref exactly. F (Σ n·g²) is not linear in
    the summed gradient: each rank squares its own and a reduce-scatter sums the rows, only when a plugin
    reads it. A mean gradient nobody reads is never reduce-scattered: the hook frees the gradient first.
    """

    kind = "fsdp"
    sharded = True
    concatenates_rows = True

    def __init__(self, trainer_cfg: Any) -> None:
        super().__init__(trainer_cfg)
        self._sharded_hooks: tuple | None = None  # (stack, layers, dispatcher) until the model is sharded

    def load(self, section: Any, device: Any) -> LoadedWeights:
        """The model on the meta device, each rank reading its rows once it is sharded; the whole model on
        ``device`` when the checkpoint cannot be read that way (``loading`` says why)."""
        from gradprune.models.shard_loading import load_empty

        model, tok, index, why = load_empty(section)
        if index is None:
            loaded = super().load(section, device)
            loaded.loading = f"full ({why})"
            return loaded
        return LoadedWeights(model, tok, index, "sharded")

    def lightning(self) -> Any:
        from lightning.pytorch.strategies import ModelParallelStrategy

        t = self.trainer_cfg
        n = device_count(t.devices, t.accelerator) * t.num_nodes
        return ModelParallelStrategy(data_parallel_size=n, tensor_parallel_size=1)

    def describe(self, world: int) -> str:
        return "fsdp"

    def configure_model(self, model: torch.nn.Module, layers: list, mesh: Any, shards_from: Any,
                        device: torch.device) -> None:
        """Shard the model over ``mesh`` with summing gradient reduction; a model on the meta device then
        reads this rank's rows; the hooks on the sharded weights go on now that they exist."""
        from gradprune.sharding import register_sharded_hooks, shard, sum_gradients

        shard(model, layers, mesh)
        sum_gradients(model)
        if shards_from is not None:
            from gradprune.models.shard_loading import load_local_shards

            load_local_shards(model, shards_from, device)
        if self._sharded_hooks is not None:
            stack, hooked, dispatcher = self._sharded_hooks
            register_sharded_hooks(stack, hooked, dispatcher.on_shard)

    def register_gradient_hooks(self, stack: contextlib.ExitStack, model: torch.nn.Module, layers: list,
                                dispatcher: Any) -> None:
        """On the unsharded parameters FSDP swaps in for each forward and backward (this rank's whole,
        local gradient of its micro-batch); on the sharded ones once the model is sharded, when the mean
        gradient is kept."""
        from gradprune.sharding import register_unsharded_hooks

        for lm in layers:
            for p in lm.weights().values():
                p.requires_grad_(True)  # fully_shard keeps the flag on the shards and the unsharded parameters
        register_unsharded_hooks(stack, layers, dispatcher.on_grad)
        self._sharded_hooks = (stack, layers, dispatcher) if dispatcher.moments.keeps_grad else None

    def passes(self, batches: list[torch.Tensor], batch: torch.Tensor, batch_idx: int, world: int,
               per_sample: bool) -> list[tuple[torch.Tensor | None, int]]:
        """Every rank runs as many passes as the rank with the most in this step: padding passes first
        (None), then its own; each pass's reference is the largest micro-batch any rank runs in it."""
        step = batches[batch_idx * world:(batch_idx + 1) * world]
        sizes = [[1] * b.shape[0] if per_sample else [b.shape[0]] * int(b.numel() > 0) for b in step]
        longest = max(len(s) for s in sizes)
        padded = [[0] * (longest - len(s)) + s for s in sizes]
        refs = [max(s[j] for s in padded) for j in range(longest)]
        own = list(super().passes(batches, batch, batch_idx, world, per_sample))
        return [(None, ref) for ref in refs[:longest - len(own)]] + [
            (ids, ref) for (ids, _), ref in zip(own, refs[longest - len(own):], strict=True)]

    def scatter_rows(self, tensor: torch.Tensor) -> torch.Tensor:
        """``tensor`` (a whole weight's shape) summed over the ranks, this rank's rows of it."""
        from gradprune.sharding import reduce_scatter_rows

        return reduce_scatter_rows(tensor)

    def combine(self, plugins: list, moments: Any, counts: torch.Tensor, layers: list,
                device: torch.device) -> None:
        """The samples first (G = Σ n·g / N), then each rank's pieces (its rows), then every accumulator:
        sums and maxima over the ranks, ``rows`` concatenated in rank (row) order."""
        self.reduce([("counts", counts, "sum")], device)
        self.observe_means(plugins, moments, layers, float(counts[1]), device)
        moments.clear()  # parameter-sized: gone before the gather of the full model
        self.reduce(_plugin_entries(plugins), device)

    def local_rows(self, param: torch.Tensor) -> torch.Tensor:
        """This rank's rows of a sharded parameter (its local shard)."""
        p = param.detach()
        return p.to_local() if hasattr(p, "to_local") else p

    def gather(self, model: torch.nn.Module, device: str | None = None) -> torch.nn.Module | None:
        """The full weights on rank 0 as a plain model on ``device`` (default: its own; ``"cpu"``: its host,
        to be spread over GPUs); None on the other ranks. Every rank takes part."""
        from gradprune.sharding import gather_full_model

        return gather_full_model(model, device)


_STRATEGIES: dict[str, type[CalibrationStrategy]] = {
    "auto": CalibrationStrategy, "single_device": CalibrationStrategy, "ddp": DataParallel,
    "fsdp": FullyShardedDataParallel,
}


def strategy_for(trainer_cfg: Any) -> CalibrationStrategy:
    """The strategy ``trainer_cfg`` (a ``TrainerSection``) calibrates under; a refused one is a RecipeError."""
    t = trainer_cfg
    why = strategy_refusal(t.strategy) or check_strategy_devices(t.strategy, t.devices, t.accelerator)
    if why is not None:
        raise RecipeError(f"trainer.strategy={t.strategy!r} {why}")
    return _STRATEGIES[settle_strategy(t.strategy, t.devices, t.accelerator).lower()](t)


def resolve_strategy(name: str, devices: int | str | list[int] = 1, accelerator: str = "auto", num_nodes: int = 1):
    """What ``L.Trainer`` gets for a recipe's ``trainer.strategy`` on ``devices`` × ``num_nodes``."""
    return strategy_for(SimpleNamespace(strategy=name, devices=devices, accelerator=accelerator,
                                        num_nodes=num_nodes)).lightning()

