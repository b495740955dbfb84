"""Guarding output dirs: results a user already has are never replaced without ``--overwrite``."""

from __future__ import annotations

from pathlib import Path

from gradprune.errors import GradpruneError

RESULT_FILES = ("run.json", "layers.csv", "plan.json", "scores.safetensors", "model")


def check_output_dir(path: str | Path, overwrite: bool, key: str = "output.dir") -> Path:
    """Refuse a dir that already holds results (or is a file) unless ``overwrite``; creates nothing."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise GradpruneError(f"{key}: {str(p)!r} is a file; expected a directory for the results")
    existing = [f for f in RESULT_FILES if (p / f).exists()]
    if existing and not overwrite:
        raise GradpruneError(
            f"{key}: {str(p)!r} already holds results ({', '.join(existing)}); choose another "
            f"output.dir=... or pass --overwrite to replace them")
    return p
