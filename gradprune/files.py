"""Atomic file writes: a temp file in the target's folder, then ``os.replace``.

A reader (or a second process writing the same cache entry) sees either the old file or the
whole new one, never a half-written file. A temp file's name says who writes it
(``.<name>.<host>.<pid>.<random>.tmp``), so one left by a killed writer can be told from one being
written right now (:func:`abandoned_temp`).
"""

from __future__ import annotations

import json
import os
import socket
import tempfile
import time
from pathlib import Path
from typing import Any

# a temp file of another host is abandoned once it is this old (its writer's PID cannot be checked)
TEMP_MAX_AGE_S = 600.0


def temp_prefix(name: str) -> str:
    """The prefix of this process's temp files for ``name`` (host and PID of the writer)."""
    return f".{name}.{socket.gethostname()}.{os.getpid()}."


def abandoned_temp(path: str | Path, max_age_s: float = TEMP_MAX_AGE_S) -> bool:
    """True if ``path`` is a temp file or folder (``.<name>.<host>.<pid>.<random>.tmp``) whose writer is
    gone: a dead PID of this host, or older than ``max_age_s`` (another host's, whose PID cannot be checked)."""
    p = Path(path)
    if not (p.name.startswith(".") and p.name.endswith(".tmp")):
        return False
    mark = f".{socket.gethostname()}."
    at = p.name.rfind(mark)
    if at > 0:
        pid = p.name[at + len(mark):-len(".tmp")].partition(".")[0]
        if pid.isdigit():
            return int(pid) != os.getpid() and not pid_alive(int(pid))
    try:
        return time.time() - p.lstat().st_mtime > max_age_s
    except OSError:
        return False


def pid_alive(pid: int) -> bool:
    """Whether a process with this PID exists on this host (one we may not signal counts as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (creating parent folders); returns the path."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=temp_prefix(target.name), suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; results should read like any file
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def atomic_write_text(path: str | Path, text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically."""
    return atomic_write_bytes(path, text.encode(encoding))


def atomic_write_json(path: str | Path, obj: Any, indent: int | None = 2) -> Path:
    """Write ``obj`` as JSON (UTF-8, keys in insertion order, trailing newline) atomically."""
    return atomic_write_text(path, json.dumps(obj, indent=indent, ensure_ascii=False) + "\n")
