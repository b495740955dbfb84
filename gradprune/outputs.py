"""Output folders of every command: whether one can be written (refused before the work, not after
it), and the names of the files ``gradprune analyze`` writes into one. A run's own files and their
guard are in :mod:`gradprune.record`."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from gradprune.errors import GradpruneError

# what ``gradprune analyze`` writes in its output dir (a search's --overwrite removes them too)
ANALYSIS_FILES = ("correlation_heatmap.png", "scatter_matrix.png", "correlation_report.txt", "correlation_report.md",
                  "prediction_model.json", "correlations.csv", "per_config.csv", "best_settings.csv",
                  "analysis.json", "paper")


def refuse_existing(path: Path, names: tuple[str, ...], overwrite: bool, is_file: str, holds: str) -> None:
    """Refuse ``path`` when it is a file (``is_file``), or holds any of ``names`` and not ``overwrite``
    (``holds``, its ``{existing}`` replaced by the names found); creates nothing."""
    if path.exists() and not path.is_dir():
        raise GradpruneError(is_file)
    existing = [name for name in names if (path / name).exists()]
    if existing and not overwrite:
        raise GradpruneError(holds.replace("{existing}", ", ".join(existing)))  # a path may hold braces


def check_writable_dir(path: str | Path, key: str = "output.dir") -> None:
    """Results can be written under ``path``: it is (or can be created as) a directory one can write in.

    Where ``path`` does not exist yet, its nearest existing ancestor must be a directory (``/etc/passwd/x``
    is refused) in which it can be created. Writability is tested for real, by creating and removing a
    temp file, because ``os.access`` says yes to root on a read-only file system. Nothing is left
    behind: the probed directory gets its modification time back.
    """
    p = Path(path).expanduser().absolute()
    for folder in (p, *p.parents):
        try:
            exists = folder.exists()
            if not exists and folder.is_symlink():
                raise GradpruneError(f"{key}: {str(path)!r} cannot be created: {str(folder)!r} is a broken "
                                     f"symbolic link")
        except OSError as exc:  # a parent that may not be searched (permissions), a symlink loop, ...
            raise GradpruneError(f"{key}: {str(path)!r} cannot be checked: {exc}") from None
        if not exists:
            continue
        if not folder.is_dir():
            if folder == p:
                raise GradpruneError(f"{key}: {str(path)!r} is a file; expected a directory for the results")
            raise GradpruneError(f"{key}: {str(path)!r} cannot be created: {str(folder)!r} is a file, not a "
                                 f"directory; choose another {key}")
        _probe_write(folder, path, key, inside=folder == p)
        return


def _probe_write(folder: Path, path: str | Path, key: str, inside: bool) -> None:
    stat = folder.stat()
    try:
        fd, name = tempfile.mkstemp(prefix=".gradprune-write-check-", dir=folder)
    except OSError as exc:
        where = "" if inside else f" (it would be created in {str(folder)!r}, its nearest existing folder)"
        raise GradpruneError(f"{key}: {str(path)!r} is not writable{where}: {exc.strerror or exc}; "
                             f"choose another {key}") from None
    os.close(fd)
    os.unlink(name)
    with contextlib.suppress(OSError):  # only the owner may set times; the probe is gone either way
        os.utime(folder, ns=(stat.st_atime_ns, stat.st_mtime_ns))
