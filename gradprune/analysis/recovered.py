"""Untuned against recovered: do the gradient statistics and the proxies predict the accuracy after
recovery as well as they predict the accuracy without it?

When a search CSV holds a target both untuned and recovered (``acc_mean`` and ``acc_mean_recovered``),
each is analysed on the rows that have both, by the same rules as the report's main target: Spearman's ρ
of every feature with the target, Benjamini–Hochberg adjusted within the target's table, and per feature
role the nested cross-validated R² of the choice among the predictors with its permutation p-value.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from gradprune.analysis.correlations import Correlation, correlate_families, target_pairs
from gradprune.analysis.document import Section, Table, fmt_p, fmt_r
from gradprune.analysis.feature_sets import feature_sets
from gradprune.analysis.loading import SearchRows
from gradprune.analysis.replicates import config_labels, has_replicates
from gradprune.prediction.columns import MIN_ROWS, ROLE_TITLES, assign_roles, feature_role, model_inputs
from gradprune.prediction.selection import RoleScore, compare_predictors, judge_roles
from gradprune.recovery.stage import SUFFIX


def counterpart(target: str, columns: Sequence[str]) -> tuple[str, str] | None:
    """(untuned, recovered) column names of ``target`` when the CSV has both, else None."""
    untuned = target.removesuffix(SUFFIX)
    recovered = untuned + SUFFIX
    return (untuned, recovered) if untuned in columns and recovered in columns else None


@dataclass(frozen=True)
class TargetScores:
    """How well the features predict one target: each feature's correlation, each role's predictor."""

    target: str
    correlations: dict[str, Correlation]
    roles: dict[str, RoleScore]


@dataclass(frozen=True)
class UntunedVsRecovered:
    """The same analysis of the untuned and the recovered target on the same rows."""

    untuned: TargetScores
    recovered: TargetScores
    n: int
    notes: list[str] = field(default_factory=list)

    @property
    def features(self) -> list[str]:
        """Features analysed for both targets, strongest |ρ| with the untuned target first."""
        both = [f for f in self.untuned.correlations if f in self.recovered.correlations]
        return sorted(both, key=lambda f: -_abs_rho(self.untuned.correlations[f]))


def _abs_rho(c: Correlation) -> float:
    return abs(c.spearman) if c.defined and np.isfinite(c.spearman) else -1.0


def _scores(rows: pd.DataFrame, target: str, groups: pd.Series | None, source: str, seed: int) -> TargetScores:
    roles = assign_roles(rows, target, source)
    X, y, mask, _ = model_inputs(roles, source)
    g = None if groups is None else groups.to_numpy()[mask]
    sets, _ = feature_sets(roles, list(X.columns))
    comparison = compare_predictors(X, y, g, seed, sets)
    role_scores = judge_roles(X, y, g, comparison, {fs.name: (fs.name,) for fs in sets}, seed)
    corrs = correlate_families(roles.data, {target: target_pairs(target, roles.features)}, seed)[target]
    return TargetScores(target, {c.x: c for c in corrs}, role_scores)


def compare_untuned_recovered(loaded: SearchRows, target: str, seed: int,
                              known: TargetScores | None = None) -> UntunedVsRecovered | None:
    """Both targets of ``target``'s pair analysed on the rows that have both; None when the CSV lacks one
    of them or too few rows have both. ``known``: ``target`` analysed on all of ``loaded``'s rows already
    (the report's main analysis), used when those are the rows that have both."""
    pair = counterpart(target, list(map(str, loaded.rows.columns)))
    if pair is None:
        return None
    values = loaded.rows[list(pair)].apply(pd.to_numeric, errors="coerce")
    both = values.notna().all(axis=1).to_numpy()
    if both.sum() < MIN_ROWS:
        return None
    rows = loaded.rows.loc[both].reset_index(drop=True)
    rows[list(pair)] = values.loc[both].to_numpy()
    groups = config_labels(rows) if has_replicates(rows) else None
    reuse = known is not None and known.target == target and bool(both.all())
    untuned, recovered = (known if reuse and t == target else _scores(rows, t, groups, str(loaded.path), seed)
                          for t in pair)
    notes = [] if both.all() else [f"{(~both).sum()} row(s) lack one of {pair[0]} and {pair[1]}: compared on "
                                   f"the {both.sum()} rows that have both"]
    return UntunedVsRecovered(untuned, recovered, int(both.sum()), notes)


def recovery_section(c: UntunedVsRecovered) -> Section:
    """The report's section: one table of features, one of feature roles, untuned beside recovered."""
    u, r = c.untuned.target, c.recovered.target
    rows = []
    for f in c.features:
        cu, cr = c.untuned.correlations[f], c.recovered.correlations[f]
        rows.append([f, feature_role(f), str(cu.n), fmt_r(cu.spearman), fmt_p(cu.spearman_p_adj), fmt_r(cr.spearman),
                     fmt_p(cr.spearman_p_adj)])
    role_rows = []
    for role in c.untuned.roles:
        if role in c.recovered.roles:
            su, sr = c.untuned.roles[role], c.recovered.roles[role]
            role_rows.append([ROLE_TITLES.get(role, role), f"{su.r2_cv_nested:.4f}", f"{su.p_value:.2g}",
                              f"{sr.r2_cv_nested:.4f}", f"{sr.p_value:.2g}"])
    blocks: list = [
        f"The same analysis of {u} (without tuning) and {r} (after the recovery training) on the {c.n} rows that "
        f"have both: does a statistic that predicts the untuned accuracy still predict it after recovery? "
        f"Spearman ρ with each target, p BH-adjusted within each target's column; strongest |ρ| with {u} first.",
        Table(["feature", "role", "n", f"ρ {u}", "p (BH)", f"ρ {r}", "p (BH)"], rows, "llrrrrr"),
        "Per feature role, the choice among the predictors judged by nested cross-validation and a permutation "
        "test (the rules of the Predictors section), for each target:",
        Table(["features by role", f"R² nested {u}", "perm. p", f"R² nested {r}", "perm. p"], role_rows, "lrrrr"),
        *c.notes,
    ]
    return Section(f"Untuned against recovered: {u} and {r}", blocks)
