"""How calibration runs on one process, on data-parallel ranks, or on FSDP shards: one object per strategy.

In the spirit of Lightning Fabric's ``Strategy``, every decision that depends on how the run is spread
over processes is a method of one object, and the stages ask it instead of testing the strategy name:

===========================  ==================  ===================  ===================================
question                     one process         ``ddp``              ``fsdp``
===========================  ==================  ===================  ===================================
how the model loads          whole, on the       whole, on this       on the meta device; each rank reads
                             run's device        rank's device        its rows once sharded
which Lightning strategy     ``auto``            DDP without the      ``ModelParallelStrategy`` (FSDP2)
                                                 model wrapper
where gradient hooks sit     each weight         each weight          the unsharded weight (this rank's
                                                                      micro-batch)
how plugin state combines    as it is            all-reduce (sum,     all-reduce; the mean gradient's
                                                 max)                 sums reduced to one owner per layer
the model for evaluation     the calibrated one  the calibrated one   gathered whole on rank 0 (its host
                                                                      when it is to be spread over GPUs)
===========================  ==================  ===================  ===================================

Plugins (estimators, collectors) never see any of this: they declare each accumulator's reduction and
the strategy applies it. Only this module and :mod:`gradprune.sharding` (FSDP2's mechanics) call
``torch.distributed``.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import torch

from gradprune.errors import CalibrationError, RecipeError
from gradprune.parallel import check_strategy_devices, device_count, settle_strategy, strategy_refusal


@dataclass
class LoadedWeights:
    """What :meth:`CalibrationStrategy.load` returns: the model (on the meta device under FSDP loading),
    its tokenizer, the checkpoint its shards are read from (None: the model holds its weights) and how the
    weights were loaded ("full", "sharded", or "full (why not sharded)")."""

    model: Any
    tokenizer: Any
    shards_from: Any = None
    loading: str = "full"


def launched_rank() -> int:
    """This process's rank when a launcher started it (Lightning's re-run of the command, torchrun, SLURM)."""
    for var in ("RANK", "LOCAL_RANK", "SLURM_PROCID"):
        if os.environ.get(var, "").isdigit():
            return int(os.environ[var])
    return 0


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
                                on_grad: Any) -> None:
        """A post-accumulate hook on every prunable weight calls ``on_grad(layer, role, param)``; only
        those weights require a gradient while ``stack`` is open."""
        for lm in layers:
            for role, p in lm.weights().items():
                p.requires_grad_(True)
                hook = (lambda lm_, r_: lambda param: on_grad(lm_, r_, param))(lm, role)
                stack.enter_context(p.register_post_accumulate_grad_hook(hook))

    def padding_passes(self, batches: list, batch: torch.Tensor, batch_idx: int, world: int,
                       per_sample: bool) -> int:
        """Uncounted passes this rank runs before ``batch`` to stay in step with the other ranks."""
        return 0

    # -- reduction ------------------------------------------------------------------------------------
    def reduce(self, entries: list[tuple[str, torch.Tensor, str]], device: torch.device) -> None:
        """Combine every ``(name, tensor, op)`` accumulator across processes, in place."""

    def reduce_to_owner(self, tensor: torch.Tensor, layer: int) -> torch.Tensor | None:
        """Under FSDP: ``tensor`` summed on the rank that owns ``layer``'s parameter-sized sums (None on the
        others); elsewhere the tensor itself."""
        return tensor

    def combine_layer_sums(self, sums: torch.Tensor, maxima: torch.Tensor) -> None:
        """Per-layer partial reductions of the owned sums, combined across ranks in place (FSDP only)."""

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


class DataParallel(CalibrationStrategy):
    """``ddp``: every rank holds the whole model and calibrates its share of the micro-batches; the
    accumulators are all-reduced once at the end (no gradient synchronisation during the pass)."""

    kind = "ddp"

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
        """All-reduce each accumulator by its op. Every rank must hold the same accumulators (names,
        shapes): checked first, since a mismatched collective would hang or mix unrelated tensors."""
        if not _distributed():
            return
        import torch.distributed as dist

        layout = [(name, tuple(t.shape), op) for name, t, op in entries]
        every: list = [None] * dist.get_world_size()
        dist.all_gather_object(every, layout)
        if any(other != layout for other in every):
            raise CalibrationError("DDP calibration: ranks hold different accumulators (a rank saw no micro-batch?)")
        for _, t, op in entries:
            # NCCL reduces device tensors only; small CPU counters travel through the strategy's device
            buf = t if t.device == device else t.to(device)
            dist.all_reduce(buf, op=dist.ReduceOp.MAX if op == "max" else dist.ReduceOp.SUM)
            if buf is not t:
                t.copy_(buf)


class FullyShardedDataParallel(DataParallel):
    """``fsdp``: every decoder layer is sharded over the ranks (FSDP2), each rank calibrates its share of
    the micro-batches; see :mod:`gradprune.sharding`."""

    kind = "fsdp"
    sharded = True

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
        """Shard the model over ``mesh``; a model on the meta device then reads this rank's rows."""
        from gradprune.sharding import shard

        shard(model, layers, mesh)
        if shards_from is not None:
            from gradprune.models.shard_loading import load_local_shards

            load_local_shards(model, shards_from, device)

    def register_gradient_hooks(self, stack: contextlib.ExitStack, model: torch.nn.Module, layers: list,
                                on_grad: Any) -> None:
        """On the unsharded parameters FSDP swaps in for each forward and backward (this rank's whole,
        local gradient of its micro-batch)."""
        from gradprune.sharding import register_unsharded_hooks

        for lm in layers:
            for p in lm.weights().values():
                p.requires_grad_(True)  # fully_shard keeps the flag on the shards and the unsharded parameters
        register_unsharded_hooks(stack, layers, on_grad)

    def padding_passes(self, batches: list, batch: torch.Tensor, batch_idx: int, world: int,
                       per_sample: bool) -> int:
        """Every rank runs as many passes per step as the most (each forward and backward is a collective)."""
        def passes(b: torch.Tensor) -> int:
            return b.shape[0] if per_sample else int(b.numel() > 0)

        step = batches[batch_idx * world:(batch_idx + 1) * world]
        return max(passes(b) for b in step) - passes(batch)

    def reduce_to_owner(self, tensor: torch.Tensor, layer: int) -> torch.Tensor | None:
        import torch.distributed as dist

        from gradprune.sharding import owner

        dst = owner(layer, dist.get_world_size())
        dist.reduce(tensor, dst=dst, op=dist.ReduceOp.SUM)
        return tensor if dist.get_rank() == dst else None

    def combine_layer_sums(self, sums: torch.Tensor, maxima: torch.Tensor) -> None:
        import torch.distributed as dist

        dist.all_reduce(sums, op=dist.ReduceOp.SUM)
        dist.all_reduce(maxima, op=dist.ReduceOp.MAX)

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
