"""The measured peak memory of each stage of a run, recorded beside the plan's estimate.

On CUDA: the allocator's peak (``torch.cuda.max_memory_allocated``), reset when a stage starts: the
bytes of live tensors, what the plan estimates. On the host: the resident set's high-water mark
(``VmHWM``, reset through ``/proc/self/clear_refs`` on Linux; elsewhere the process's peak from
``getrusage``, which cannot be reset) minus the resident set before the model was loaded, i.e. the
Python runtime and its libraries. The host figure also counts what the allocator keeps after a free
(glibc returns large blocks at once, small ones not), so it reads a little above the tensors' bytes.
"""

from __future__ import annotations

import contextlib
import os
import re
import resource
import sys
from typing import Any

_CLEAR_REFS = "/proc/self/clear_refs"
_STATUS = "/proc/self/status"


def _status_bytes(key: str) -> int | None:
    try:
        with open(_STATUS, encoding="ascii") as fh:
            found = re.search(rf"^{key}:\s+(\d+) kB", fh.read(), re.M)
    except OSError:
        return None
    return int(found.group(1)) * 1024 if found else None


def rss_bytes() -> int:
    """This process's resident set now (its peak where the current value cannot be read)."""
    now = _status_bytes("VmRSS")
    return now if now is not None else _max_rss()


def _max_rss() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # bytes on macOS, KiB on Linux


def reset_host_peak() -> bool:
    """Reset the resident set's high-water mark to its current value; False where that is impossible."""
    if not os.access(_CLEAR_REFS, os.W_OK):
        return False
    try:
        fd = os.open(_CLEAR_REFS, os.O_WRONLY)  # a kernel control file, not a result: no atomic write
        try:
            os.write(fd, b"5")  # Linux >= 4.0: VmHWM := VmRSS
        finally:
            os.close(fd)
    except OSError:
        return False
    return True


def host_peak_bytes() -> int:
    """The resident set's high-water mark since the last reset (or since the process started)."""
    peak = _status_bytes("VmHWM")
    return peak if peak is not None else _max_rss()


class StagePeaks:
    """Measures each stage's peak: ``enter(stage)`` ends the previous one and starts measuring the next.

    ``device``: where the run computes (a ``torch.device`` or its string); CUDA is measured by the
    allocator, anything else by the host's resident set.
    """

    def __init__(self, device: Any) -> None:
        self.cuda = str(device).startswith("cuda")
        self.baseline = rss_bytes()  # the runtime before the model: host figures are above it
        self.resettable = False
        self.current: str | None = None
        self.peaks: dict[str, int] = {}

    def enter(self, stage: str) -> None:
        """Close the running stage and start ``stage`` (a stage entered twice keeps its larger peak)."""
        self.close()
        self.current = stage
        if self.cuda:
            import torch

            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        else:
            self.resettable = reset_host_peak()

    def close(self) -> None:
        """Record the running stage's peak."""
        if self.current is None:
            return
        if self.cuda:
            import torch

            torch.cuda.synchronize()
            peak = int(torch.cuda.max_memory_allocated())
        else:
            peak = max(0, host_peak_bytes() - self.baseline)
        self.peaks[self.current] = max(peak, self.peaks.get(self.current, 0))
        self.current = None

    def how(self) -> str:
        """What the figures are, for run.json."""
        if self.cuda:
            return "torch.cuda.max_memory_allocated per stage"
        what = "per stage" if self.resettable else "since the process started (VmHWM could not be reset)"
        return f"host resident-set high-water mark {what}, minus the resident set before loading"


@contextlib.contextmanager
def watching(peaks: StagePeaks | None, stage: str):
    """``peaks.enter(stage)`` for a block (no-op without ``peaks``)."""
    if peaks is not None:
        peaks.enter(stage)
    yield
