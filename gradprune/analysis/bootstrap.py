"""Vectorised percentile-bootstrap confidence intervals of Spearman and Pearson coefficients.

All resamples of all columns are drawn as one index array, so a column is resampled and ranked once
per chunk of resamples (not once per pair and resample), and each pair costs one multiply-add over
that chunk. Ranks within a resample are computed by counting (ties get average ranks, as scipy's).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

N_RESAMPLES = 1000
_CHUNK_CELLS = 25_000  # resamples × rows per chunk: the working set of all columns stays in cache
_MIN_DEFINED = 0.5  # a CI needs at least this share of resamples in which both columns vary


@dataclass(frozen=True)
class BootstrapCI:
    """95 % (or ``level``) percentile intervals; NaN bounds when too few resamples were defined."""

    spearman: tuple[float, float]
    pearson: tuple[float, float]


def _resampled_ranks(codes: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Average ranks (1-based) of ``codes[idx]`` within each row of ``idx``."""
    b, _ = idx.shape
    u = int(codes.max()) + 1
    vals = codes[idx]
    counts = np.bincount((vals + u * np.arange(b)[:, None]).ravel(), minlength=b * u).reshape(b, u)
    avg = np.cumsum(counts, axis=1) - (counts - 1) / 2.0
    return np.take_along_axis(avg, vals, axis=1)


def _standardise_rows(a: np.ndarray) -> np.ndarray:
    """Rows centred and scaled to unit norm, so a dot product of two rows is their Pearson r."""
    size = np.abs(a).max(axis=1, keepdims=True)
    a = a - a.mean(axis=1, keepdims=True)
    norm = np.sqrt(np.einsum("ij,ij->i", a, a))[:, None]
    with np.errstate(invalid="ignore", divide="ignore"):
        # a resample in which a column is constant (up to rounding) has no correlation: NaN, not a finding
        return np.where(norm > 1e-9 * size, a / norm, np.nan)


def _percentiles(draws: np.ndarray, level: float) -> tuple[float, float]:
    ok = draws[np.isfinite(draws)]
    if ok.size < _MIN_DEFINED * draws.size:
        return (float("nan"), float("nan"))
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(ok, [alpha, 1.0 - alpha])
    return (float(lo), float(hi))


def _draws(columns: Mapping[str, np.ndarray], pairs: Sequence[tuple[str, str]],
           idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Spearman and Pearson coefficients of every pair in every resample: two (resamples, pairs) arrays."""
    names = sorted({c for p in pairs for c in p})
    codes = {c: np.unique(columns[c], return_inverse=True)[1] for c in names}
    n = idx.shape[1]
    step = max(1, _CHUNK_CELLS // max(n, 1))
    sp = np.empty((idx.shape[0], len(pairs)))
    pe = np.empty_like(sp)
    for start in range(0, idx.shape[0], step):
        chunk = idx[start:start + step]
        zr = {c: _standardise_rows(_resampled_ranks(codes[c], chunk)) for c in names}
        zv = {c: _standardise_rows(columns[c][chunk]) for c in names}
        for k, (x, y) in enumerate(pairs):
            sp[start:start + step, k] = np.einsum("ij,ij->i", zr[x], zr[y])
            pe[start:start + step, k] = np.einsum("ij,ij->i", zv[x], zv[y])
    return np.clip(sp, -1.0, 1.0), np.clip(pe, -1.0, 1.0)  # rounding can step past ±1


def bootstrap_cis(columns: Mapping[str, np.ndarray], pairs: Sequence[tuple[str, str]], seed: int,
                  n_resamples: int = N_RESAMPLES, level: float = 0.95) -> dict[tuple[str, str], BootstrapCI]:
    """Percentile bootstrap CIs for each pair of equally long, NaN-free columns (rows resampled jointly)."""
    if not pairs:
        return {}
    n = len(next(iter(columns.values())))
    idx = np.random.default_rng(seed).integers(0, n, size=(n_resamples, n))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        sp, pe = _draws(columns, pairs, idx)
    return {p: BootstrapCI(_percentiles(sp[:, k], level), _percentiles(pe[:, k], level))
            for k, p in enumerate(pairs)}
