"""One model over the GPUs of one process (``eval.device_map: auto``), for a model no single GPU holds.

Under FSDP rank 0 gathers the full weights after calibration; a 70B model does not fit its GPU. With
``eval.device_map: auto`` it keeps them on the host and spreads the model over every GPU it sees with
accelerate's big-model dispatch: whole decoder layers per GPU (``_no_split_modules``), balanced memory,
hooks that move activations from one GPU to the next. Surgery slices the weights in place on their GPUs,
and lm-eval's ``HFLM`` takes the dispatched model as it is (its own ``parallelize=True`` only applies to
models it loads itself), feeding inputs to the first GPU. Offloading to the host or disk is refused: it
would make an evaluation of hours one of days.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch

from gradprune.errors import EvalError


def device_map_for(model: Any, max_memory: dict | None = None) -> dict[str, int | str]:
    """The module → GPU index map accelerate would dispatch ``model`` with (``max_memory``: per device,
    e.g. ``{0: "70GiB", 1: "70GiB"}``; default: balanced over the visible GPUs)."""
    from accelerate import infer_auto_device_map
    from accelerate.utils import get_balanced_memory

    no_split = sorted(getattr(model, "_no_split_modules", None) or [])
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is not available.*")  # a max_memory naming other GPUs
        if max_memory is None:
            max_memory = get_balanced_memory(model, no_split_module_classes=no_split)
        device_map = dict(infer_auto_device_map(model, max_memory=max_memory, no_split_module_classes=no_split))
    offloaded = [name for name, where in device_map.items() if where in ("cpu", "disk")]
    if offloaded:
        gpus = sorted(k for k in max_memory if isinstance(k, int))
        raise EvalError(
            f"eval.device_map=auto: the model does not fit the memory of GPUs {gpus} "
            f"({len(offloaded)} modules would be offloaded to the host or disk, e.g. {offloaded[0]!r}); "
            "use more GPUs, a lower model.dtype, or eval.run: none and evaluate the saved checkpoint elsewhere")
    return device_map


def spread(model: Any, max_memory: dict | None = None) -> Any:
    """``model`` dispatched over the visible GPUs (unchanged when there are none: it stays on the host)."""
    if max_memory is None and not torch.cuda.is_available():
        return model
    from accelerate import dispatch_model

    return dispatch_model(model, device_map=device_map_for(model, max_memory))
