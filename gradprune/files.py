"""Atomic file writes: a temp file in the target's folder, then ``os.replace``.

A reader (or a second process writing the same cache entry) sees either the old file or the
whole new one, never a half-written file. A temp file's name says who writes it
(``.<name>.<host>.<pid>.<random>.tmp``), so one left by a killed writer can be told from one being
written right now (:func:`abandoned_temp`).

Several files that belong together (a run's results, an analysis) are written whole or not at all:
:func:`write_together` and :func:`staged_dir` write every file aside first and move them into place
only once all are written, so a full disk or a missing permission leaves the old files as they were
(:func:`write_failure` recognises such a failure, whichever library raised it).
"""

from __future__ import annotations

import contextlib
import errno
import glob
import json
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from gradprune.errors import OutputError

# a temp file of another host is abandoned once it is this old (its writer's PID cannot be checked)
TEMP_MAX_AGE_S = 600.0


def cache_root() -> Path:
    """gradprune's cache folder: ``$GRADPRUNE_CACHE`` (default ``~/.cache/gradprune``)."""
    return Path(os.environ.get("GRADPRUNE_CACHE", "~/.cache/gradprune")).expanduser()


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


def json_text(obj: Any, indent: int | None = 2) -> str:
    """``obj`` as the JSON text gradprune writes (keys in insertion order, non-ASCII kept, trailing newline)."""
    return json.dumps(obj, indent=indent, ensure_ascii=False) + "\n"


def atomic_write_json(path: str | Path, obj: Any, indent: int | None = 2) -> Path:
    """Write ``obj`` as JSON (UTF-8, keys in insertion order, trailing newline) atomically."""
    return atomic_write_text(path, json_text(obj, indent))


# ---------------------------------------------------------------------------------------------
# writing files that belong together: all or none

_DISK_FULL = {errno.ENOSPC, errno.EDQUOT}
_NOT_WRITABLE = {errno.EACCES, errno.EPERM, errno.EROFS}
# the same failures as libraries that wrap the OS error in their own exception word them (safetensors'
# SafetensorError quotes Rust's io::Error: "No space left on device (os error 28)", kind StorageFull)
_DISK_FULL_TEXT = ("No space left on device", "os error 28", "StorageFull", "Disk quota exceeded")
_NOT_WRITABLE_TEXT = ("Permission denied", "os error 13", "Read-only file system", "os error 30")


def write_failure(exc: BaseException) -> str | None:
    """``"disk full"`` or ``"permission denied"`` when ``exc`` (or an exception it was raised from) is a
    write that failed for lack of space or of permission, else None."""
    seen: set[int] = set()
    pending = [exc]
    while pending:
        e = pending.pop()
        if id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in _DISK_FULL:
            return "disk full"
        if isinstance(e, OSError) and e.errno in _NOT_WRITABLE:
            return "permission denied"
        text = str(e)
        if any(t in text for t in _DISK_FULL_TEXT):
            return "disk full"
        if any(t in text for t in _NOT_WRITABLE_TEXT):
            return "permission denied"
        pending.extend(c for c in (e.__cause__, e.__context__) if c is not None)
    return None


def free_bytes(path: str | Path) -> int | None:
    """Free space (bytes) on the file system that holds ``path`` or would hold it (None: unknown)."""
    for folder in (Path(path).absolute(), *Path(path).absolute().parents):
        with contextlib.suppress(OSError):
            if folder.exists():
                return shutil.disk_usage(folder).free
    return None


def _mb(n: int | None) -> str:
    return "unknown" if n is None else f"{n / 2**20:.3g} MB"


def write_error(kind: str, what: str | Path, needed: int) -> OutputError:
    """The error of a write that could not be made (``kind`` from :func:`write_failure`)."""
    return OutputError(f"{kind} while writing {what}: {_mb(needed)} needed, free space {_mb(free_bytes(what))}; "
                       f"nothing was replaced")


def check_space(what: str | Path, needed: int) -> None:
    """Refuse (before anything is written) to write ``needed`` bytes where less is free."""
    free = free_bytes(what)
    if free is not None and needed > free:
        raise write_error("disk full", what, needed)


@contextlib.contextmanager
def failures_named(what: str | Path, needed: int) -> Iterator[None]:
    """A write in the block that fails for lack of space or permission becomes an :class:`OutputError`
    naming ``what``, the bytes needed and the free space; other exceptions pass unchanged."""
    try:
        yield
    except OutputError:
        raise
    except Exception as exc:
        kind = write_failure(exc)
        if kind is None:
            raise
        raise write_error(kind, what, needed) from None


def _write_synced(path: Path, data: bytes) -> None:
    with open(path, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.chmod(path, 0o666 & ~_umask())


def write_together(folder: str | Path, files: dict[str, bytes]) -> list[Path]:
    """Write every file of ``files`` (name → bytes) into ``folder``, all or none.

    Each is first written to a temp file beside its target; only when every one is written are they
    renamed into place (a rename needs no free space). A failure on the way removes the temp files and
    leaves every existing file as it was: an :class:`OutputError` where the disk is full or the folder
    is not writable.
    """
    out = Path(folder)
    needed = sum(len(b) for b in files.values())
    check_space(out, needed)
    temps: dict[str, Path] = {}
    try:
        with failures_named(out, needed):
            out.mkdir(parents=True, exist_ok=True)
            for name, data in files.items():
                fd, tmp = tempfile.mkstemp(prefix=temp_prefix(name), suffix=".tmp", dir=out)
                os.close(fd)
                temps[name] = Path(tmp)
                _write_synced(temps[name], data)
            for name, tmp in temps.items():
                os.replace(tmp, out / name)
    finally:
        for tmp in temps.values():
            tmp.unlink(missing_ok=True)
    return [out / name for name in files]


@contextlib.contextmanager
def staged_dir(target: str | Path) -> Iterator[Path]:
    """A temp sibling folder of ``target`` to write its new contents into (removed on the way out;
    named like a temp file, so one a killed writer left is recognised by :func:`abandoned_temp`)."""
    t = Path(target)
    t.parent.mkdir(parents=True, exist_ok=True)
    for old in t.parent.glob(f".{glob.escape(t.name)}.*.tmp"):  # left by a killed writer of the same target
        if old.is_dir() and not old.is_symlink() and abandoned_temp(old):
            shutil.rmtree(old, ignore_errors=True)
    staged = Path(tempfile.mkdtemp(prefix=temp_prefix(t.name), suffix=".tmp", dir=t.parent))
    try:
        yield staged
    finally:
        shutil.rmtree(staged, ignore_errors=True)


def write_whole(target: str | Path, files: dict[str, bytes], replaces: tuple[str, ...], last: str) -> None:
    """Write ``files`` (relative names, which may hold a folder: ``paper/numbers.tex``) as ``target``'s new
    results, all or none: into a temp sibling folder first, then :func:`swap_in` (``replaces``, ``last``).
    A full disk or a folder that cannot be written is an :class:`OutputError`; the old results stay."""
    needed = sum(len(b) for b in files.values())
    check_space(target, needed)
    with failures_named(target, needed), staged_dir(target) as staged:
        for name, data in files.items():
            path = staged / name
            path.parent.mkdir(parents=True, exist_ok=True)
            _write_synced(path, data)
        swap_in(staged, target, replaces, last)


def swap_in(staged: Path, target: str | Path, replaces: tuple[str, ...], last: str) -> None:
    """Move the entries of ``staged`` into ``target``, replacing the ones named in ``replaces`` (also those
    the new contents lack: an old result must not pass for a new one); other entries of ``target`` stay.

    Only renames happen here, so a full disk cannot stop it half-way. ``last`` (the file whose presence
    marks a complete result) is moved aside first and into place last.
    """
    t = Path(target)
    if not t.exists():
        os.chmod(staged, 0o777 & ~_umask())  # mkdtemp made it 0700; results should read like any folder
        os.replace(staged, t)
        return
    trash = Path(tempfile.mkdtemp(prefix=".replaced-", dir=staged))
    for name in dict.fromkeys((last, *replaces)):
        if (t / name).exists() or (t / name).is_symlink():
            os.replace(t / name, trash / name)
    new = [p.name for p in staged.iterdir() if p != trash]
    for name in sorted(new, key=lambda n: n == last):
        os.replace(staged / name, t / name)
