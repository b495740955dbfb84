"""The Lightning Trainer of calibration, and the one device it puts this process on.

A run uses one device for every stage: the model is loaded straight onto it, and the dense
evaluation, calibration, surgery and the pruned evaluation all run there. Which device that is
(``trainer.accelerator`` / ``devices``, and under DDP this rank's ``LOCAL_RANK``) is Lightning's
decision, so the run asks a Trainer built from the same settings before anything loads.
"""

from __future__ import annotations

import logging
from typing import Any

from gradprune.errors import RecipeError


def build_trainer(trainer_cfg: Any, callbacks: list | None = None, **fit: Any):
    """A ``lightning.Trainer`` for one calibration pass (no logger, checkpoints, sampler or summary);
    ``fit``: Trainer arguments that replace those of that pass (recovery's epochs, steps, accumulation)."""
    import lightning as L
    from lightning.fabric.utilities.exceptions import MisconfigurationException

    from gradprune.strategy import strategy_for

    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    logging.getLogger("lightning.fabric").setLevel(logging.WARNING)
    settings: dict[str, Any] = dict(
        max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, use_distributed_sampler=False, num_sanity_val_steps=0)
    try:
        return L.Trainer(
            accelerator=trainer_cfg.accelerator, devices=trainer_cfg.devices, num_nodes=trainer_cfg.num_nodes,
            strategy=strategy_for(trainer_cfg).lightning(),
            precision=trainer_cfg.precision, callbacks=callbacks or [], **{**settings, **fit},
        )
    except (MisconfigurationException, ValueError) as exc:  # no such accelerator here, too many devices, ...
        raise RecipeError(_trainer_message(trainer_cfg, exc)) from None


def _trainer_message(trainer_cfg: Any, exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return (f"trainer (accelerator={trainer_cfg.accelerator!r}, devices={trainer_cfg.devices!r}, "
            f"strategy={trainer_cfg.strategy!r}) cannot be used here: {text}")


def run_device(trainer_cfg: Any):
    """The ``torch.device`` this process computes on under ``trainer_cfg`` (e.g. ``cuda:0`` or ``cpu``)."""
    from gradprune.memory.release import dismantle_trainer

    trainer = build_trainer(trainer_cfg)
    device = trainer.strategy.root_device
    dismantle_trainer(trainer, None)  # a Trainer's parts point at it: freed now, not by the cycle collector
    return device


def device_of(model: Any) -> str:
    """Where ``model``'s weights are, as recorded in run.json (``cuda:0``, ``cpu``, or a list if split)."""
    devices = sorted({str(p.device) for p in model.parameters()})
    return devices[0] if len(devices) == 1 else ",".join(devices)


def float32_matmul_precision(trainer_cfg: Any, device: Any) -> str:
    """Set torch's float32 matmul precision from ``trainer.matmul_precision`` for a run on ``device``; returns
    the precision in effect, which run.json records. CUDA only: elsewhere it stays as it is (on a CPU with
    AMX, "medium" would compute in bf16)."""
    import torch

    wanted = trainer_cfg.matmul_precision
    if wanted == "auto":
        from gradprune.recipe import MIXED_PRECISIONS

        wanted = "high" if trainer_cfg.precision in MIXED_PRECISIONS else "highest"
    if torch.device(device).type == "meta":  # FSDP loads on meta: the run computes where the trainer says
        device = run_device(trainer_cfg)
    if torch.device(device).type == "cuda":
        torch.set_float32_matmul_precision(wanted)
    return torch.get_float32_matmul_precision()
