"""Lightning strategies for calibration.

Calibration needs no gradient synchronisation: each process reduces its own micro-batches into
accumulators, which are all-reduced once at the end. So ``ddp`` maps to a DDP strategy that sets up
the process group but does not wrap the model in DistributedDataParallel.

How the ranks start (Lightning 2.x):

* ``ddp`` with ``devices: N`` on one machine: Lightning re-runs the same command (``sys.argv``) N-1
  times with ``LOCAL_RANK``/``WORLD_SIZE``/``MASTER_PORT`` set ("popen" launcher). Every rank calibrates
  its shard and, after the reduction, holds the same scores; only rank 0 shows progress.
* ranks started by a launcher (``torchrun``, SLURM, or any tool that sets ``LOCAL_RANK``, ``RANK``,
  ``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``): Lightning joins them instead of starting any.

``ddp_spawn``/``ddp_fork``/``ddp_notebook`` are refused (by the recipe schema too): they run ``fit`` in worker processes that
exit afterwards, so the accumulators would never reach the calling process.
"""

from __future__ import annotations

from gradprune.errors import RecipeError

WORKER_LAUNCHED = ("ddp_spawn", "ddp_fork", "ddp_notebook")


def resolve_strategy(name: str):
    """Map a recipe's ``trainer.strategy`` to what ``L.Trainer`` gets."""
    if name in WORKER_LAUNCHED:
        raise RecipeError(
            f"trainer.strategy={name!r} runs calibration in worker processes whose accumulators never come "
            f"back; use 'ddp' (Lightning re-runs the command on every rank) or start the ranks with torchrun")
    if name == "ddp":
        from lightning.pytorch.strategies import DDPStrategy

        class ShardedCalibrationStrategy(DDPStrategy):
            """DDP process group without the DDP model wrapper (accumulators are reduced by hand)."""

            def configure_ddp(self) -> None:
                # keep the plain LightningModule: no per-step gradient all-reduce is wanted
                pass

        return ShardedCalibrationStrategy(start_method="popen")
    return name
