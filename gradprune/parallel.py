"""Lightning strategies for calibration.

Calibration needs no gradient synchronisation: each process reduces its own micro-batches into
accumulators, which are all-reduced once at the end. So ``ddp`` maps to a DDP strategy that sets up
the process group but does not wrap the model in DistributedDataParallel.
"""

from __future__ import annotations


def resolve_strategy(name: str):
    """Map a recipe's ``trainer.strategy`` to what ``L.Trainer`` gets."""
    if name in ("ddp", "ddp_spawn", "ddp_fork", "ddp_notebook"):
        from lightning.pytorch.strategies import DDPStrategy

        class ShardedCalibrationStrategy(DDPStrategy):
            """DDP process group without the DDP model wrapper (accumulators are reduced by hand)."""

            def configure_ddp(self) -> None:
                # keep the plain LightningModule: no per-step gradient all-reduce is wanted
                pass

        start = {"ddp": "popen", "ddp_spawn": "spawn", "ddp_fork": "fork", "ddp_notebook": "fork"}[name]
        return ShardedCalibrationStrategy(start_method=start)
    return name
