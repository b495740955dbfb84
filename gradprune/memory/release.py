"""Releasing what a stage allocated, at once, without waiting for Python's cycle collector.

Python frees an object when its last reference goes, except objects in a reference cycle, which only
the cycle collector frees; it runs on object counts, not bytes, so a cycle that pins a model or a
parameter-sized buffer may outlive a trial on a GPU and meet the next trial's. Lightning's Trainer and
its LightningModule point at each other (and the Trainer's loops and connectors at the Trainer), and an
exception's traceback keeps every frame it passed through, with their locals, alive. These helpers break
such cycles explicitly, and hand the memory the CUDA allocator caches back to the device.
"""

from __future__ import annotations

import sys
import traceback
from typing import Any


def dismantle_trainer(trainer: Any, module: Any) -> None:
    """Cut every reference from a spent Lightning ``trainer``'s objects to itself and to ``module``.

    Walks the attributes of the Lightning objects reachable from ``trainer`` (its strategy, loops,
    connectors, callbacks' connector, ...) and sets each attribute that holds ``trainer`` or ``module`` to
    None; then ``module`` forgets its trainer. Afterwards both are freed as soon as the caller drops
    them. Only objects of Lightning's own classes are touched, and only their back-references: the
    trainer must not be used again.
    """
    if trainer is None:
        return
    targets = (trainer, module)
    seen: set[int] = set()
    todo: list[Any] = [trainer]
    while todo:
        obj = todo.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        if isinstance(obj, (list, tuple, set, frozenset)):
            todo.extend(obj)
            continue
        if isinstance(obj, dict):
            todo.extend(obj.values())
            continue
        if obj is module or not type(obj).__module__.startswith("lightning"):
            continue
        attrs = getattr(obj, "__dict__", None)
        if attrs is None:
            continue
        for key, value in list(attrs.items()):
            if any(value is t for t in targets):
                attrs[key] = None
            else:
                todo.append(value)
    if module is not None and "_trainer" in vars(module):
        module._trainer = None


def forget_frames(exc: BaseException | None) -> None:
    """Clear the locals of every finished frame in ``exc``'s traceback (and in the exceptions it chains).

    A failed trial's traceback holds the frames of the run it interrupted, so its model and buffers
    live as long as the exception does; a frame that also holds the exception (a library that kept it)
    makes that a cycle. The message and the traceback's lines stay; only the locals go.
    """
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        traceback.clear_frames(exc.__traceback__)  # a frame still executing is skipped
        exc = exc.__cause__ or exc.__context__


def free_device_cache() -> None:
    """Give the blocks the CUDA caching allocator holds for freed tensors back to the device (no-op
    without CUDA, or before CUDA was first used in this process)."""
    torch = sys.modules.get("torch")  # never import torch just for this
    if torch is None or not torch.cuda.is_available() or not torch.cuda.is_initialized():
        return
    torch.cuda.empty_cache()
