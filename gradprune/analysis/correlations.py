"""Spearman and Pearson coefficients with p-values (scipy), n, Benjamini–Hochberg-adjusted p-values
and bootstrap confidence intervals, for feature-vs-target tables and for all pairs of a column set.
"""

from __future__ import annotations

import functools
import itertools
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from gradprune.analysis.bootstrap import N_RESAMPLES, bootstrap_cis

NAN = float("nan")
ALPHA = 0.05  # significance level of the BH-adjusted p-values (false discovery rate)
EXACT_MAX_N = 8  # up to here p-values come from all n! pairings (8! = 40,320)
PERMUTATION_MAX_N = 30  # up to here Monte Carlo permutation p-values; above, scipy's t approximation holds
N_PERMUTATIONS = 1999  # Monte Carlo permutations: the smallest p-value is 1 / (N_PERMUTATIONS + 1)


@dataclass(frozen=True)
class Correlation:
    """One pair of columns: coefficients, p-values, adjusted p-values and bootstrap CIs.

    ``undefined`` says why there is no coefficient ("constant", too few rows); the numbers are NaN then.
    """

    x: str
    y: str
    n: int
    spearman: float = NAN
    spearman_p: float = NAN
    pearson: float = NAN
    pearson_p: float = NAN
    spearman_p_adj: float = NAN
    pearson_p_adj: float = NAN
    spearman_ci: tuple[float, float] = (NAN, NAN)
    pearson_ci: tuple[float, float] = (NAN, NAN)
    undefined: str = ""

    @property
    def defined(self) -> bool:
        """Whether the coefficients exist (both columns vary over at least 3 shared rows)."""
        return not self.undefined

    @property
    def significant(self) -> bool:
        """Spearman's BH-adjusted p-value is below ALPHA."""
        return self.defined and self.spearman_p_adj < ALPHA


def bh_adjust(p_values: Sequence[float]) -> np.ndarray:
    """Benjamini–Hochberg adjusted p-values (scipy); NaN entries stay NaN and do not count as tests."""
    from scipy.stats import false_discovery_control

    p = np.asarray(p_values, dtype=float)
    out = np.full(p.shape, NAN)
    ok = np.isfinite(p)
    if ok.any():
        out[ok] = false_discovery_control(p[ok], method="bh")
    return out


@functools.cache
def _permutations(n: int) -> np.ndarray:
    return np.array(list(itertools.permutations(range(n))), dtype=np.intp)


def exact_p(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sided exact permutation p-value of Pearson's r of ``a`` and ``b``: every one of the n! pairings,
    two-sided as scipy.stats.permutation_test (twice the smaller tail).

    The norms do not change under permutation, so comparing Σ a·b of centred values is enough.
    """
    a, b = a - a.mean(), b - b.mean()
    observed = float(a @ b)
    null = a[_permutations(len(a))] @ b
    tol = 1e-9 * max(abs(observed), float(np.abs(null).max()))  # pairings tied with the observed one count
    tails = np.mean(null >= observed - tol), np.mean(null <= observed + tol)
    return float(min(1.0, 2 * min(tails)))


def monte_carlo_p(a: np.ndarray, b: np.ndarray, seed: int = 0) -> float:
    """Two-sided Monte Carlo permutation p-value of Pearson's r of ``a`` and ``b`` (scipy.stats.permutation_test,
    N_PERMUTATIONS pairings): never below 1 / (N_PERMUTATIONS + 1), the resolution of the test, where the
    t approximation would print p-values that no permutation test of n < 30 points can resolve."""
    from scipy.stats import permutation_test

    a, b = a - a.mean(), b - b.mean()

    def statistic(x: np.ndarray, axis: int = -1) -> np.ndarray:
        return np.sum(x * b, axis=axis)  # ∝ r: the norms do not change under permutation

    res = permutation_test((a,), statistic, permutation_type="pairings", vectorized=True,
                           n_resamples=N_PERMUTATIONS, alternative="two-sided", random_state=seed)
    return float(res.pvalue)


def correlate(xname: str, yname: str, x: np.ndarray, y: np.ndarray) -> Correlation:
    """Spearman and Pearson (scipy) over the rows where both values exist; undefined if either is constant.

    With n ≤ EXACT_MAX_N the t approximation behind scipy's p-values is unreliable (n = 4 points in perfect
    order get p = 0), so the p-values there are exact permutation p-values instead; up to PERMUTATION_MAX_N
    they are Monte Carlo permutation p-values (ρ = −1 at n = 12 gets 1e-4, not the t approximation's
    "p < 1e-16", below anything a permutation test of 12 points can resolve: 2/12!).
    """
    from scipy import stats

    ok = np.isfinite(x) & np.isfinite(y)
    n = int(ok.sum())
    if n < 3:
        return Correlation(xname, yname, n, undefined="undefined (fewer than 3 rows)")
    xs, ys = x[ok], y[ok]
    if np.ptp(xs) == 0 or np.ptp(ys) == 0:
        return Correlation(xname, yname, n, undefined="undefined (constant)")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # near-constant input warnings: the values are still scipy's
        s = stats.spearmanr(xs, ys)
        p = stats.pearsonr(xs, ys)
    sp_p, pe_p = float(s.pvalue), float(p.pvalue)
    if n <= EXACT_MAX_N:
        sp_p, pe_p = exact_p(stats.rankdata(xs), stats.rankdata(ys)), exact_p(xs, ys)
    elif n <= PERMUTATION_MAX_N:
        sp_p, pe_p = monte_carlo_p(stats.rankdata(xs), stats.rankdata(ys)), monte_carlo_p(xs, ys)
    return Correlation(xname, yname, n, float(s.statistic), sp_p, float(p.statistic), pe_p)


def _with_cis(data: pd.DataFrame, corrs: list[Correlation], seed: int, n_resamples: int) -> list[Correlation]:
    # pairs of NaN-free columns share one resample array; a pair with gaps is resampled on its own rows
    complete = [c for c in data.columns if data[c].notna().all()]
    shared = [(c.x, c.y) for c in corrs if c.defined and c.x in complete and c.y in complete]
    cis = bootstrap_cis({c: data[c].to_numpy(float) for c in complete}, shared, seed, n_resamples)
    for k, c in enumerate(c for c in corrs if c.defined and (c.x, c.y) not in cis):
        sub = data[[c.x, c.y]].dropna()
        cols = {name: sub[name].to_numpy(float) for name in (c.x, c.y)}
        cis.update(bootstrap_cis(cols, [(c.x, c.y)], seed + 1 + k, n_resamples))
    return [replace(c, spearman_ci=cis[(c.x, c.y)].spearman, pearson_ci=cis[(c.x, c.y)].pearson)
            if c.defined else c for c in corrs]


def correlate_families(data: pd.DataFrame, families: Mapping[str, Sequence[tuple[str, str]]], seed: int,
                       n_resamples: int = N_RESAMPLES) -> dict[str, list[Correlation]]:
    """Correlations of each family of column pairs, BH-adjusted within the family, with bootstrap CIs.

    The families share one bootstrap: a pair that appears in two families gets the same interval.
    """
    out: dict[str, list[Correlation]] = {}
    for name, pairs in families.items():
        corrs = [correlate(x, y, data[x].to_numpy(float), data[y].to_numpy(float)) for x, y in pairs]
        sp_adj = bh_adjust([c.spearman_p for c in corrs])
        pe_adj = bh_adjust([c.pearson_p for c in corrs])
        out[name] = [replace(c, spearman_p_adj=float(a), pearson_p_adj=float(b))
                     for c, a, b in zip(corrs, sp_adj, pe_adj, strict=True)]
    unique = list({(c.x, c.y): c for corrs in out.values() for c in corrs}.values())
    cis = {(c.x, c.y): c for c in _with_cis(data, unique, seed, n_resamples)}
    return {name: [replace(c, spearman_ci=cis[(c.x, c.y)].spearman_ci, pearson_ci=cis[(c.x, c.y)].pearson_ci)
                   for c in corrs] for name, corrs in out.items()}


def target_pairs(target: str, features: Sequence[str]) -> list[tuple[str, str]]:
    """(feature, target) for every feature."""
    return [(f, target) for f in features]


def all_pairs(columns: Sequence[str]) -> list[tuple[str, str]]:
    """Every unordered pair of ``columns`` (the cells of a heatmap above its diagonal)."""
    return [(a, b) for i, a in enumerate(columns) for b in columns[i + 1:]]


def by_strength(corrs: Sequence[Correlation]) -> list[Correlation]:
    """Strongest |Spearman| first; undefined ones last."""
    return sorted(corrs, key=lambda c: -abs(c.spearman) if c.defined else 1.0)


def spearman_matrix(columns: Sequence[str], pairs: Sequence[Correlation]) -> pd.DataFrame:
    """Square Spearman matrix of ``columns`` from pair results (NaN where undefined, 1 on the diagonal)."""
    m = pd.DataFrame(np.eye(len(columns)), index=list(columns), columns=list(columns))
    for c in pairs:
        m.loc[c.x, c.y] = m.loc[c.y, c.x] = c.spearman
    return m


def stars(p_adj: float) -> str:
    """Significance stars of an adjusted p-value: * < 0.05, ** < 0.01, *** < 0.001."""
    if not np.isfinite(p_adj):
        return ""
    return "***" if p_adj < 0.001 else "**" if p_adj < 0.01 else "*" if p_adj < ALPHA else ""


def strength(r: float) -> str:
    """Plain word for the size of a coefficient (|r| < .1 negligible, < .3 weak, < .5 moderate, else strong)."""
    a = abs(r)
    return "negligible" if a < 0.1 else "weak" if a < 0.3 else "moderate" if a < 0.5 else "strong"


def correlations_frame(scope: str, corrs: Sequence[Correlation]) -> pd.DataFrame:
    """The rows of correlations.csv for one family of tests (``scope`` names it)."""
    rows = [{
        "scope": scope, "x": c.x, "y": c.y, "n": c.n,
        "spearman": c.spearman, "spearman_p": c.spearman_p, "spearman_p_bh": c.spearman_p_adj,
        "spearman_ci_low": c.spearman_ci[0], "spearman_ci_high": c.spearman_ci[1],
        "pearson": c.pearson, "pearson_p": c.pearson_p, "pearson_p_bh": c.pearson_p_adj,
        "pearson_ci_low": c.pearson_ci[0], "pearson_ci_high": c.pearson_ci[1],
        "note": c.undefined,
    } for c in corrs]
    return pd.DataFrame(rows)
