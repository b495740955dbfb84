"""Correlations and predictors within each level of a grouping (a pruning ratio, a model), pooled with
the level as a covariate, and the leave-one-model-out check of the exported predictor.

*Within a level*: the usual correlations (per-config means where there are replicates) and the same
choice among the predictors, on that level's rows alone.

*Pooled, level as covariate*: every value minus its level's mean (a fixed effect per level), then the
pooled within-level correlation (p-values and Fisher-z intervals on N − g − 1 degrees of freedom, as
for replicates) and the predictor comparison on those deviations, with targets shuffled only within a
level in the permutation test. What is left is what a feature says at a fixed level.

A pooled (all-rows) correlation is judged against the within-level one: it *holds*, *does not hold*
(no significant relation at a fixed level: it came from differences between levels) or *reverses*
(significant with the opposite sign: Simpson's paradox).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from gradprune.analysis.correlations import Correlation, bh_adjust, correlate_families, target_pairs
from gradprune.analysis.levels import Grouping
from gradprune.analysis.replicates import pooled_within
from gradprune.prediction.columns import MIN_ROWS
from gradprune.prediction.selection import (
    CandidateScore,
    FeatureSet,
    RoleScore,
    compare_predictors,
    judge_roles,
    r2,
)

HOLDS, NOT_WITHIN, REVERSES, ONLY_WITHIN = "holds", "does not hold", "reverses", "only within"
SetsFor = Callable[[list[str]], list[FeatureSet]]  # usable feature columns → the feature sets compared


@dataclass(frozen=True)
class LevelResult:
    """One level: its rows, correlations with the target and (enough rows) the predictor comparison."""

    label: str
    n: int  # rows
    units: int  # configs with replicates, else rows
    corrs: list[Correlation]
    roles: dict[str, RoleScore] | None = None
    skipped: str = ""  # why the predictors were not compared here


@dataclass(frozen=True)
class LeaveOneModelOut:
    """The exported predictor refitted without each model and scored on that model's rows."""

    predictor: str
    per_model: dict[str, tuple[int, float]]  # model → (rows, R² on its own rows)
    r2: float  # over every held-out prediction
    baseline_r2: float  # predicting the other models' mean


@dataclass(frozen=True)
class WithinAnalysis:
    """Everything judged within the levels of a grouping."""

    grouping: Grouping
    levels: list[LevelResult]
    pooled: list[Correlation]  # level as covariate
    pooled_roles: dict[str, RoleScore] | None
    verdicts: dict[str, str]  # feature → HOLDS / NOT_WITHIN / REVERSES / ONLY_WITHIN
    lomo: LeaveOneModelOut | None = None
    n_levels_used: int = 0

    def pooled_of(self, feature: str) -> Correlation | None:
        """The pooled within-level correlation of ``feature``."""
        return next((c for c in self.pooled if c.x == feature), None)


def _units(frame: pd.DataFrame, configs: pd.Series | None) -> pd.DataFrame:
    """Per-config means where there are replicates (replicates of one config are not independent)."""
    if configs is None:
        return frame
    return frame.groupby(configs.loc[frame.index].to_numpy(), sort=False).mean()


def _varying(X: pd.DataFrame) -> list[str]:
    scale = X.abs().max().replace(0, 1.0)
    spread = X.max() - X.min()
    return [c for c in X.columns if spread[c] > 1e-9 * scale[c]]


def _varying_within(X: pd.DataFrame, levels: np.ndarray) -> list[str]:
    """Columns that vary inside at least one level (a level's constant leaves only rounding residue)."""
    return list(dict.fromkeys(c for lv in dict.fromkeys(levels) for c in _varying(X.loc[levels == lv])))


def _compare(X: pd.DataFrame, y: np.ndarray, g: np.ndarray | None, seed: int, sets_for: SetsFor,
             strata: np.ndarray | None = None, usable: list[str] | None = None
             ) -> tuple[dict[str, RoleScore] | None, str]:
    usable = [c for c in X.columns if c in usable] if usable is not None else _varying(X)
    units = len(np.unique(g)) if g is not None else len(y)
    if units < MIN_ROWS + 1 or not usable or np.ptp(y) == 0:
        why = (f"{units} {'configs' if g is not None else 'rows'}" if units < MIN_ROWS + 1 else
               "no feature varies" if not usable else "the target does not vary")
        return None, why
    sets = sets_for(usable)
    if not sets:
        return None, "no feature set varies"
    Xu = X[usable]
    cmp = compare_predictors(Xu, y, g, seed, sets)
    if not cmp.scores:
        return None, "no predictor could be fitted"
    return judge_roles(Xu, y, g, cmp, {fs.name: (fs.name,) for fs in sets}, seed, strata=strata), ""


def _pooled_correlations(data: pd.DataFrame, target: str, features: list[str], labels: pd.Series,
                         configs: pd.Series | None) -> list[Correlation]:
    keep = labels.notna()
    frame = data.loc[keep]
    lev = labels.loc[keep]
    if configs is not None:
        cfg = configs.loc[keep]
        frame = frame.groupby(cfg.to_numpy(), sort=False).mean()
        lev = lev.groupby(cfg.to_numpy(), sort=False).first()
    dev = frame - frame.groupby(lev.to_numpy()).transform("mean")
    dev = dev.mask(dev.abs() <= 1e-12 * frame.abs().max(), 0.0)  # rounding residue of a constant
    n_levels = int(lev.nunique())
    corrs = [pooled_within(dev, target, f, n_levels) for f in features]
    sp, pe = bh_adjust([c.spearman_p for c in corrs]), bh_adjust([c.pearson_p for c in corrs])
    return [replace(c, spearman_p_adj=float(a), pearson_p_adj=float(b)) for c, a, b in zip(corrs, sp, pe, strict=True)]


def verdict(pooled: Correlation | None, within: Correlation | None) -> str | None:
    """How an all-rows correlation fares at a fixed level (None: nothing to say)."""
    if pooled is None or within is None or not within.defined:
        return None
    if pooled.significant:
        if within.significant:
            return HOLDS if np.sign(within.spearman) == np.sign(pooled.spearman) else REVERSES
        return NOT_WITHIN
    return ONLY_WITHIN if within.significant else None


def analyze_within(data: pd.DataFrame, target: str, features: list[str], grouping: Grouping,
                   model_inputs: tuple[pd.DataFrame, np.ndarray, np.ndarray], configs: pd.Series | None,
                   seed: int, sets_for: SetsFor, overall: Sequence[Correlation]) -> WithinAnalysis:
    """Per-level and pooled (level as covariate) correlations and predictor comparisons; ``overall``: the
    all-rows correlations the verdicts judge; ``model_inputs``: (X, y, mask) of the predictors."""
    X, y, mask = model_inputs
    labels = grouping.labels
    levels = []
    for level in grouping.levels:
        rows = labels.index[labels == level]
        units = _units(data.loc[rows], configs)
        corrs = correlate_families(units, {"t": target_pairs(target, features)}, seed)["t"] if len(units) >= 3 else []
        in_level = (labels.to_numpy() == level)[mask]
        g = None if configs is None else configs.to_numpy()[mask][in_level]
        roles, why = _compare(X.loc[in_level].reset_index(drop=True), y[in_level], g, seed, sets_for)
        levels.append(LevelResult(level, len(rows), len(units), corrs, roles, why))
    pooled = _pooled_correlations(data, target, features, labels, configs)
    strata = labels.to_numpy()[mask]
    has = pd.notna(strata)
    Xd, yd = X.loc[has].reset_index(drop=True), y[has]
    lev = strata[has]
    usable = _varying_within(Xd, lev)
    Xd = Xd - Xd.groupby(lev).transform("mean")
    yd = yd - pd.Series(yd).groupby(lev).transform("mean").to_numpy()
    g = None if configs is None else configs.to_numpy()[mask][has]
    pooled_roles = None
    if len(set(lev)) >= 2:
        pooled_roles, _ = _compare(Xd, yd, g, seed, sets_for, strata=lev, usable=usable)
    verdicts = {}
    for c in overall:
        if (v := verdict(c, next((p for p in pooled if p.x == c.x), None))) is not None:
            verdicts[c.x] = v
    return WithinAnalysis(grouping, levels, pooled, pooled_roles, verdicts,
                          n_levels_used=sum(1 for lv in levels if lv.roles is not None))


def leave_one_model_out(X: pd.DataFrame, y: np.ndarray, models: np.ndarray, best: CandidateScore,
                        columns: Sequence[str], max_features: int) -> LeaveOneModelOut | None:
    """The exported predictor (``best`` on its feature set's ``columns``) fitted on all models but one and
    scored on that one's rows; None with fewer than two models."""
    from gradprune.plugins import PREDICTORS

    known = pd.notna(models)
    names = list(dict.fromkeys(models[known]))
    if len(names) < 2:
        return None
    pred, base = np.full(len(y), np.nan), np.full(len(y), np.nan)
    per_model = {}
    for name in names:
        test = known & (models == name)
        train = known & ~test
        predictor = PREDICTORS.build(best.name, best.params)
        fit = predictor.fit(X.loc[train, list(columns)], y[train], max_features)
        pred[test] = fit.predict(X.loc[test, list(columns)])
        base[test] = y[train].mean()
        own = r2(y[test], pred[test]) if test.sum() >= 2 and np.ptp(y[test]) > 0 else float("nan")
        per_model[str(name)] = (int(test.sum()), own)
    return LeaveOneModelOut(best.label, per_model, r2(y[known], pred[known]), r2(y[known], base[known]))
