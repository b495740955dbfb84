"""How much memory the run's device has: a GPU's free memory, or the host's available memory.

Read once before anything loads (and again when the plan picks ``calibration.batch_size: auto``). Tests
replace :func:`device_capacity` to plan for a device this machine does not have.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

#: the share of the free memory a plan may fill: the CUDA allocator's fragmentation and what the estimate
#: leaves out (the CUDA context's workspaces, library buffers) need the rest
USABLE_SHARE = 0.9


@dataclass(frozen=True)
class Capacity:
    """One device's memory: ``kind`` "cuda" or "cpu" (the host), its free and total bytes, and how many
    GPUs this process sees (FSDP ranks and a spread model can use them all)."""

    kind: str
    label: str
    free: int
    total: int
    gpus: int = 0

    @property
    def usable(self) -> int:
        """What a plan may fill."""
        return int(self.free * USABLE_SHARE)

    @property
    def what(self) -> str:
        """``the GPU`` / ``the host`` for messages."""
        return "the GPU" if self.kind == "cuda" else "the host"

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (run.json)."""
        return {"device": self.label, "free_bytes": self.free, "total_bytes": self.total, "gpus": self.gpus,
                "usable_share": USABLE_SHARE}


def host_capacity() -> Capacity:
    """The host's available memory (what can be allocated without swapping)."""
    import psutil

    vm = psutil.virtual_memory()
    return Capacity("cpu", "host memory", int(vm.available), int(vm.total))


def _cuda_index(devices: Any) -> int:
    """The GPU this process computes on under ``trainer.devices`` (Lightning's choice for one device)."""
    if isinstance(devices, list) and devices:
        return int(devices[0])
    text = str(devices)
    if "," in text:
        return int(text.split(",")[0])
    local = os.environ.get("LOCAL_RANK", "")
    return int(local) if local.isdigit() else 0


def device_capacity(trainer_cfg: Any) -> Capacity | None:
    """The memory of the device ``trainer_cfg`` computes on: a CUDA GPU's free memory, or the host's
    available memory; None for other accelerators (MPS, TPU), which the plan does not check."""
    name = str(trainer_cfg.accelerator).lower()
    if name == "cpu":
        return host_capacity()
    import torch

    if name in ("auto", "gpu", "cuda") and torch.cuda.is_available():
        index = _cuda_index(trainer_cfg.devices)
        free, total = torch.cuda.mem_get_info(index)
        label = f"cuda:{index} ({torch.cuda.get_device_name(index)})"
        return Capacity("cuda", label, int(free), int(total), torch.cuda.device_count())
    if name == "auto":
        mps = getattr(torch.backends, "mps", None)
        return None if mps is not None and mps.is_available() else host_capacity()
    return None
