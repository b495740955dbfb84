"""Spreading points over a space: the farthest-first (greedy maximin) choices of predictor screening.

Used twice: which grid points are evaluated first (spread over the grid, before any calibration) and
which screened points are evaluated "for coverage" (farthest from every evaluated point in the space
of gradient statistics), so the prediction model is checked where it extrapolates most.
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np


def grid_points(space: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """Every point of the space in the order the search enqueues them (itertools.product)."""
    keys = list(space)
    return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*space.values())]


def grid_coordinates(space: dict[str, list[Any]]) -> np.ndarray:
    """Each grid point as its values' positions in their lists, scaled to [0, 1] per key (a list of
    numbers is taken in its given order, which is how grids are written: small to large)."""
    spans = [max(len(v) - 1, 1) for v in space.values()]
    idx = itertools.product(*(range(len(v)) for v in space.values()))
    return np.array([[i / s for i, s in zip(combo, spans, strict=True)] for combo in idx], dtype=float).reshape(
        -1, len(space))


def farthest_first(X: np.ndarray, chosen: list[int], candidates: list[int], k: int) -> list[int]:
    """Greedily pick ``k`` of ``candidates``, each the one farthest (Euclidean) from all points chosen so
    far; ties go to the earlier candidate. With nothing chosen yet the first candidate starts."""
    picked: list[int] = []
    pool = list(candidates)
    have = list(chosen)
    while pool and len(picked) < k:
        if have:
            dist = np.min(np.linalg.norm(X[pool][:, None, :] - X[have][None, :, :], axis=2), axis=1)
            j = int(np.argmax(dist))  # first maximum: the earlier candidate on ties
        else:
            j = 0
        picked.append(pool.pop(j))
        have.append(picked[-1])
    return picked


def initial_design(space: dict[str, list[Any]], n: int) -> list[int]:
    """Indices (grid order) of ``n`` points spread over the grid, starting from its first point."""
    X = grid_coordinates(space)
    return sorted(farthest_first(X, [], list(range(len(X))), n))


def standardised(frame, columns: list[str]) -> np.ndarray:
    """Z-scores of ``columns`` of a DataFrame; a missing value sits at its column's mean, a constant
    column contributes nothing."""
    values = frame[columns].apply(lambda c: c.astype(float)).to_numpy(float)
    means = np.nanmean(values, axis=0) if len(values) else np.zeros(len(columns))
    sds = np.nanstd(values, axis=0) if len(values) else np.ones(len(columns))
    z = (values - means) / np.where(sds > 0, sds, 1.0)
    return np.nan_to_num(z, nan=0.0)
