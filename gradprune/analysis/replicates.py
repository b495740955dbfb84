"""Calibration seeds as replicates: several rows per grid point share a ``config_id``.

The target's variance splits into a between-setting part (what the calibration setting does) and a
within-setting part (calibration noise: which windows the seed drew). One-way ANOVA tests the
setting effect; ICC(1) says which share of the variance is between settings. Correlations are taken
on per-config means (the setting effect) and on within-config deviations (do replicates that deviate
in a feature also deviate in the target?).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from gradprune.analysis.correlations import (
    Correlation,
    bh_adjust,
    correlate,
    correlate_families,
    target_pairs,
)

CONFIG = "config_id"


@dataclass(frozen=True)
class VarianceDecomposition:
    """One-way random-effects decomposition of one column over configs (NaN where undefined)."""

    column: str
    n: int  # rows
    groups: int  # configs
    k0: float  # the adjusted mean group size of unbalanced designs
    msb: float  # mean square between configs
    msw: float  # mean square within configs (seed noise)
    f: float  # one-way ANOVA F (scipy.stats.f_oneway)
    p: float
    icc_raw: float  # (MSB − MSW) / (MSB + (k0 − 1)·MSW); may be negative

    @property
    def icc(self) -> float:
        """ICC(1) clipped at 0 (a negative estimate means no between-setting variance)."""
        return max(0.0, self.icc_raw) if math.isfinite(self.icc_raw) else float("nan")


def has_replicates(rows: pd.DataFrame) -> bool:
    """True when a ``config_id`` column exists and some config has at least two rows."""
    return CONFIG in rows.columns and rows[CONFIG].notna().any() and rows.groupby(CONFIG).size().max() >= 2


def config_labels(rows: pd.DataFrame) -> pd.Series:
    """The config of each row as text; a row without a config_id is a config of its own."""
    ids = rows[CONFIG].astype("string")
    return ids.fillna(pd.Series([f"row{i}" for i in range(len(rows))], index=rows.index, dtype="string"))


def decompose(column: str, values: np.ndarray, groups: np.ndarray) -> VarianceDecomposition:
    """ANOVA F, p (scipy) and ICC(1) of ``values`` grouped by ``groups`` (rows with NaN are left out)."""
    from scipy.stats import f_oneway

    ok = np.isfinite(values)
    frame = pd.DataFrame({"v": values[ok], "g": groups[ok]})
    parts = [g["v"].to_numpy() for _, g in frame.groupby("g", sort=False)]
    n, g = int(ok.sum()), len(parts)
    nan = float("nan")
    if g < 2 or n <= g:
        return VarianceDecomposition(column, n, g, nan, nan, nan, nan, nan, nan)
    sizes = np.array([len(p) for p in parts], dtype=float)
    grand = frame["v"].mean()
    msb = float(sum(s * (p.mean() - grand) ** 2 for s, p in zip(sizes, parts, strict=True)) / (g - 1))
    msw = float(sum(((p - p.mean()) ** 2).sum() for p in parts) / (n - g))
    k0 = float((n - (sizes ** 2).sum() / n) / (g - 1))
    if msw == 0.0:  # no seed noise at all: F is infinite, or undefined when nothing varies
        f, p, icc = (math.inf, 0.0, 1.0) if msb > 0 else (nan, nan, nan)
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = f_oneway(*parts)
        f, p = float(res.statistic), float(res.pvalue)
        icc = (msb - msw) / (msb + (k0 - 1.0) * msw)
    return VarianceDecomposition(column, n, g, k0, msb, msw, f, p, float(icc))


def per_config_table(data: pd.DataFrame, groups: pd.Series) -> pd.DataFrame:
    """Mean, sd and n across replicates of every column of ``data``, one row per config."""
    grouped = data.groupby(groups.to_numpy(), sort=False)
    stats = {}
    for col in data.columns:
        stats[f"{col}_mean"] = grouped[col].mean()
        stats[f"{col}_sd"] = grouped[col].std(ddof=1)
        stats[f"{col}_n"] = grouped[col].count()
    table = pd.DataFrame(stats)
    table.insert(0, "n", grouped.size())
    table.index.name = CONFIG
    return table.reset_index()


def within_deviations(data: pd.DataFrame, groups: pd.Series) -> pd.DataFrame:
    """Each value minus its config's mean, for rows of configs with at least two rows."""
    g = groups.to_numpy()
    dev = data - data.groupby(g).transform("mean")
    # a setting parameter is constant within a config: rounding residue of the mean is not variation
    dev = dev.mask(dev.abs() <= 1e-12 * data.abs().max(), 0.0)
    return dev[groups.map(groups.value_counts()).to_numpy() >= 2]


def _t_p(r: float, df: int) -> float:
    from scipy.stats import t

    if abs(r) >= 1.0:
        return 0.0
    return float(2 * t.sf(abs(r) * math.sqrt(df / (1 - r * r)), df))


def _fisher_ci(r: float, se: float) -> tuple[float, float]:
    z = math.atanh(max(min(r, 1 - 1e-12), -1 + 1e-12))
    return (math.tanh(z - 1.959964 * se), math.tanh(z + 1.959964 * se))


def pooled_within(dev: pd.DataFrame, target: str, feature: str, groups: int) -> Correlation:
    """Pooled within-config correlation of a feature with the target.

    The coefficients are those of the deviations; p-values and Fisher-z CIs use N − g − 1 degrees of
    freedom, because g config means were estimated from the same rows (scipy's n − 2 would overstate).
    """
    c = correlate(feature, target, dev[feature].to_numpy(float), dev[target].to_numpy(float))
    if not c.defined:
        return c
    df = c.n - groups - 1
    if df < 2:
        return Correlation(feature, target, c.n, undefined="undefined (too few replicates)")
    se_p = 1 / math.sqrt(df - 1)
    se_s = math.sqrt((1 + c.spearman ** 2 / 2) / (df - 1))  # Bonett–Wright variance of Spearman's z
    return Correlation(feature, target, c.n, c.spearman, _t_p(c.spearman, df), c.pearson, _t_p(c.pearson, df),
                       spearman_ci=_fisher_ci(c.spearman, se_s), pearson_ci=_fisher_ci(c.pearson, se_p))


@dataclass(frozen=True)
class ReplicateAnalysis:
    """Everything the replicate analysis found; ``means``/``sds`` feed the figures."""

    target: VarianceDecomposition
    features: list[VarianceDecomposition]
    per_config: pd.DataFrame
    means: pd.DataFrame
    sds: pd.DataFrame
    between: list[Correlation]  # per-config means against the target's mean
    within: list[Correlation]  # within-config deviations against the target's deviations


def analyze_replicates(data: pd.DataFrame, groups: pd.Series, target: str, seed: int) -> ReplicateAnalysis:
    """Variance decomposition, per-config table and between/within correlations of ``data``."""
    features = [c for c in data.columns if c != target]
    g = groups.to_numpy()
    target_vd = decompose(target, data[target].to_numpy(float), g)
    feature_vds = [decompose(f, data[f].to_numpy(float), g) for f in features]
    grouped = data.groupby(g, sort=False)
    means, sds = grouped.mean(), grouped.std(ddof=1)
    between = correlate_families(means, {"b": target_pairs(target, features)}, seed)["b"]
    dev = within_deviations(data, groups)
    n_groups = int(groups[dev.index].nunique())
    within = [pooled_within(dev, target, f, n_groups) for f in features]
    sp_adj, pe_adj = bh_adjust([c.spearman_p for c in within]), bh_adjust([c.pearson_p for c in within])
    within = [replace(c, spearman_p_adj=float(a), pearson_p_adj=float(b))
              for c, a, b in zip(within, sp_adj, pe_adj, strict=True)]
    return ReplicateAnalysis(target_vd, feature_vds, per_config_table(data, groups), means, sds, between, within)


@dataclass(frozen=True)
class BestSettings:
    """Configs ranked by their mean target over replicates, and whether the best is distinguishable from
    the runner-up (Welch's t-test on their replicates, scipy)."""

    table: pd.DataFrame  # rank, config_id, n, mean, sd, ci_low, ci_high, then the setting values
    t: float
    p: float

    @property
    def best(self) -> pd.Series:
        """The first-ranked config's row."""
        return self.table.iloc[0]


def best_settings(data: pd.DataFrame, groups: pd.Series, target: str, settings: list[str],
                  higher_is_better: bool) -> BestSettings:
    """Per config: mean, sd, n and the 95 % t-interval of the mean target (scipy), ranked best first."""
    from scipy import stats

    g = groups.to_numpy()
    grouped = data.groupby(g, sort=False)
    y = grouped[target]
    table = pd.DataFrame({"n": y.count(), "mean": y.mean(), "sd": y.std(ddof=1)})
    lo, hi = [], []
    for n, mean, sd in table[["n", "mean", "sd"]].itertuples(index=False):
        if n >= 2 and np.isfinite(sd):
            a, b = stats.t.interval(0.95, n - 1, loc=mean, scale=sd / math.sqrt(n)) if sd > 0 else (mean, mean)
        else:
            a = b = float("nan")
        lo.append(float(a))
        hi.append(float(b))
    table["ci_low"], table["ci_high"] = lo, hi
    for s in settings:
        table[s] = grouped[s].first()
    table = table.sort_values("mean", ascending=not higher_is_better, kind="stable")
    table.index.name = CONFIG
    table = table.reset_index()
    table.insert(0, "rank", range(1, len(table) + 1))
    t = p = float("nan")
    if len(table) >= 2:
        first, second = (data[target].to_numpy(float)[g == table[CONFIG].iloc[k]] for k in (0, 1))
        if len(first) >= 2 and len(second) >= 2:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                res = stats.ttest_ind(first, second, equal_var=False)
            t, p = float(res.statistic), float(res.pvalue)
    return BestSettings(table, t, p)
