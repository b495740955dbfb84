"""Strategy names for calibration: the ones it supports, and why the others are refused.

Calibration needs no gradient synchronisation: each process reduces its own micro-batches into
accumulators, which are all-reduced once at the end. So ``ddp`` maps to a DDP strategy that sets up
the process group but does not wrap the model in DistributedDataParallel.

How the ranks start (Lightning 2.x):

* ``ddp`` with ``devices: N`` on one machine: Lightning re-runs the same command (``sys.argv``) N-1
  times with ``LOCAL_RANK``/``WORLD_SIZE``/``MASTER_PORT`` set ("popen" launcher). Every rank calibrates
  its shard and, after the reduction, holds the same scores; only rank 0 shows progress.
* ranks started by a launcher (``torchrun``, SLURM, or any tool that sets ``LOCAL_RANK``, ``RANK``,
  ``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``): Lightning joins them instead of starting any.

``auto`` on several devices (or on ``devices: -1``, or ``"auto"`` on GPUs) is resolved to ``ddp``
(``settle_strategy``): Lightning's own pick there wraps the model in DistributedDataParallel.
``fsdp`` shards each decoder layer over the ranks (FSDP2, :mod:`gradprune.sharding`), started the same
two ways. This module only names and checks strategies (the recipe validates against it); what each one
does at run time is :mod:`gradprune.strategy`.
Every other strategy name is refused when the recipe is validated (``REFUSED_STRATEGIES`` gives the
reason per family), not after the model has loaded: the gradient hooks read each prunable weight's
whole, local, un-averaged gradient, which flat-parameter sharding (FSDP1, DeepSpeed ZeRO), gradient averaging (the
DDP wrapper) or worker processes (spawn/fork/notebook launchers) take away.
"""

from __future__ import annotations

import os
from typing import Any

#: strategy names calibration runs under (``single_device`` is resolved to ``auto`` on one device)
SUPPORTED_STRATEGIES = ("auto", "single_device", "ddp", "fsdp")

_USE_DDP = "use 'ddp' (Lightning re-runs the command on every rank) or start the ranks with torchrun"
_WORKERS = f"runs calibration in worker processes whose accumulators never come back; {_USE_DDP}"

#: strategy family -> why calibration refuses it. A family matches its own name and every
#: ``<family>_...`` variant Lightning registers (``ddp_spawn_find_unused_parameters_true``,
#: ``deepspeed_stage_3_offload``, ``fsdp_cpu_offload``, ...); the longest matching family wins.
REFUSED_STRATEGIES: dict[str, str] = {
    "ddp_spawn": _WORKERS,
    "ddp_fork": _WORKERS,
    "ddp_notebook": _WORKERS,
    "ddp_find_unused_parameters": (
        "wraps the model in DistributedDataParallel, which calibration does not use (it fails at setup on a "
        "model without trainable parameters, and would average the gradients across ranks before the hooks "
        "read them); use 'ddp'"),
    "fsdp": (
        "is Lightning's FSDP1 variant, whose flat parameters hide the q/k/v/o and gate/up/down weights from "
        "the gradient hooks; use 'fsdp' (FSDP2 per decoder layer, see docs/running.md) or 'ddp'"),
    "deepspeed": (
        "hands backward to the DeepSpeed engine, which averages gradients across ranks and (ZeRO stage 2/3) "
        "partitions gradients and parameters, so the gradient hooks would see averaged, partial or empty "
        f"tensors and the scores would come back wrong; {_USE_DDP}"),
    "xla": f"runs calibration in XLA worker processes whose accumulators never come back; {_USE_DDP}",
    "single_xla": "XLA (TPU) devices are not supported by calibration; use a CPU or GPU accelerator",
    "single_tpu": "XLA (TPU) devices are not supported by calibration; use a CPU or GPU accelerator",
}

def strategy_refusal(name: str) -> str | None:
    """Why calibration cannot run under strategy ``name``, or None when it can."""
    key = name.lower()  # Lightning lower-cases strategy names too
    if key in SUPPORTED_STRATEGIES:
        return None
    families = [f for f in REFUSED_STRATEGIES if key == f or key.startswith(f + "_")]
    if families:
        return REFUSED_STRATEGIES[max(families, key=len)]
    return f"is not a strategy calibration supports; expected one of {', '.join(SUPPORTED_STRATEGIES)}"


def device_count(devices: int | str | list[int], accelerator: str = "auto") -> int | None:
    """How many devices ``trainer.devices`` asks for, or None when Lightning decides when it starts
    (``-1`` / ``"-1"``: every CPU core or GPU; ``"auto"``: one CPU, or every GPU)."""
    if isinstance(devices, list):
        return len(devices)
    text = str(devices).strip()
    if "," in text:  # Lightning's "0," / "0,1": device indices
        return len([d for d in text.split(",") if d.strip()])
    if text == "auto":
        return 1 if accelerator == "cpu" else None
    try:
        n = int(text)
    except ValueError:
        return None
    return None if n == -1 else n


def check_strategy_devices(name: str, devices: int | str | list[int], accelerator: str = "auto") -> str | None:
    """Why ``name`` cannot run on ``devices`` (None when it can): ``single_device`` needs exactly one,
    ``fsdp`` a device count known before it starts (the mesh it shards over)."""
    if name.lower() == "single_device" and device_count(devices, accelerator) != 1:
        return (f"runs on one device but trainer.devices is {devices!r}; set devices: 1 (or one index, e.g. [0]), "
                f"or use 'ddp' for several")
    if name.lower() == "fsdp" and device_count(devices, accelerator) is None:
        return f"shards over a fixed number of processes but trainer.devices is {devices!r}; give a count, e.g. 8"
    return None


def settle_strategy(name: str, devices: int | str | list[int], accelerator: str = "auto") -> str:
    """The strategy calibration runs under: ``auto`` on several (or possibly several) devices is ``ddp``.

    Lightning's own choice there is its DDP with the DistributedDataParallel model wrapper, which
    calibration does not use: it fails at setup ("DistributedDataParallel is not needed when a module
    doesn't have any parameter that requires a gradient"). On one device ``auto`` stays ``auto``.
    """
    if name.lower() == "auto" and device_count(devices, accelerator) != 1:
        return "ddp"
    return name


def is_fsdp(trainer_cfg: Any) -> bool:
    """Whether ``trainer_cfg`` (a ``TrainerSection``) calibrates under FSDP."""
    return settle_strategy(trainer_cfg.strategy, trainer_cfg.devices, trainer_cfg.accelerator).lower() == "fsdp"


def launched_rank() -> int:
    """This process's rank when a launcher started it (Lightning's re-run of the command, torchrun, SLURM);
    read from the environment, so that the CLI knows it before anything heavy is imported."""
    for var in ("RANK", "LOCAL_RANK", "SLURM_PROCID"):
        if os.environ.get(var, "").isdigit():
            return int(os.environ[var])
    return 0
