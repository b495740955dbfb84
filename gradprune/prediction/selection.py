"""Cross-validated comparison of every registered predictor on every feature set; the best by
cross-validated R² is exported, and how good that choice is gets judged without optimism:

* nested cross-validation: the whole choice (predictor and feature set) is repeated inside every
  outer training fold, so the outer predictions never saw the rows they predict, not even through the
  choice;
* a permutation test: the targets are shuffled (whole configs with replicates) and the whole choice is
  re-run, so the p-value says how often the best of these candidates reaches that cross-validated R² on
  data in which nothing predicts the target.

Rows are left out one at a time (leave-one-out); with replicates whole configs are left out
(leave-one-config-out), so replicates of one config never sit on both sides of a split. Above
MAX_LOO_FOLDS units K_FOLDS-fold cross-validation is used instead (the refits of the permutation test
and of the nested cross-validation grow with the number of folds).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from gradprune.errors import PluginError
from gradprune.prediction.predictors import IsotonicFit, LinearFit, Predictor

MAX_LOO_FOLDS = 12
K_FOLDS = 10
N_PERMUTATIONS = 99  # at most; p ≥ 1 / (N_PERMUTATIONS + 1)
STOP_AFTER = 8  # sequential stopping (Besag & Clifford 1991): a role stops after this many exceedances


@dataclass(frozen=True)
class CVScheme:
    """How rows were split: a name for the report and the (train, test) index arrays."""

    name: str
    splits: list[tuple[np.ndarray, np.ndarray]]
    units: int  # rows, or configs when grouped


def cv_scheme(n: int, groups: np.ndarray | None, seed: int) -> CVScheme:
    """Leave-one-out (or leave-one-config-out with groups); K-fold above MAX_LOO_FOLDS units."""
    from sklearn.model_selection import GroupKFold, KFold, LeaveOneGroupOut, LeaveOneOut

    dummy = np.zeros((n, 1))
    if groups is None:
        k = min(K_FOLDS, n)
        splitter, name = ((LeaveOneOut(), "leave-one-out") if n <= MAX_LOO_FOLDS
                          else (KFold(k, shuffle=True, random_state=seed), f"{k}-fold"))
        return CVScheme(name, list(splitter.split(dummy)), n)
    units = len(np.unique(groups))
    k = min(K_FOLDS, units)
    splitter, name = ((LeaveOneGroupOut(), "leave-one-config-out") if units <= MAX_LOO_FOLDS
                      else (GroupKFold(k, shuffle=True, random_state=seed), f"{k}-fold by config"))
    return CVScheme(name, list(splitter.split(dummy, groups=groups)), units)


Fold = tuple[pd.DataFrame, np.ndarray, pd.DataFrame, np.ndarray]  # X_train, y_train, X_test, test rows


def make_folds(X: pd.DataFrame, y: np.ndarray, scheme: CVScheme) -> list[Fold]:
    """The data of every split, sliced once and shared by all candidates."""
    return [(X.iloc[train], y[train], X.iloc[test], test) for train, test in scheme.splits]


def cv_predictions(predictor: Predictor, folds: list[Fold], n: int, max_features: int) -> np.ndarray:
    """Each row's prediction by the model fitted (features chosen too) without that row's fold."""
    out = np.empty(n)
    for X_train, y_train, X_test, test in folds:
        out[test] = predictor.fit(X_train, y_train, max_features).predict(X_test)
    return out


def r2(y: np.ndarray, pred: np.ndarray) -> float:
    """1 − Σ(y − ŷ)² / Σ(y − ȳ)², with ȳ the mean of all rows (sklearn's r2_score)."""
    from sklearn.metrics import r2_score

    return float(r2_score(y, pred))


def mae(y: np.ndarray, pred: np.ndarray) -> float:
    """Mean absolute error (sklearn)."""
    from sklearn.metrics import mean_absolute_error

    return float(mean_absolute_error(y, pred))



ALL = "all features"  # the one feature set when the caller names none


@dataclass(frozen=True)
class FeatureSet:
    """A named group of feature columns (a role, or roles together) offered to every predictor."""

    name: str
    columns: tuple[str, ...]


@dataclass(frozen=True)
class CandidateScore:
    """One predictor (registry name + params) on one feature set: its fit on all rows and its scores."""

    name: str
    params: dict[str, Any]
    fit: LinearFit | IsotonicFit
    r2: float
    mae: float
    r2_cv: float
    mae_cv: float
    feature_set: str = ALL

    @property
    def label(self) -> str:
        """``name``, ``name(key=value)``, followed by ``on <feature set>`` when sets are compared."""
        args = ", ".join(f"{k}={v}" for k, v in self.params.items())
        base = f"{self.name}({args})" if args else self.name
        return base if self.feature_set == ALL else f"{base} on {self.feature_set}"


def candidate_specs(features: list[str]) -> list[tuple[str, dict[str, Any]]]:
    """Every registered predictor with its default params (a one-feature predictor picks its feature
    inside every fold, so it is one candidate, not one per feature)."""
    from gradprune.plugins import PREDICTORS

    return [(name, {}) for name in PREDICTORS.names()]


@dataclass(frozen=True)
class Comparison:
    """All candidates, best (highest cross-validated R², then fewest features) first."""

    scheme: CVScheme
    max_features: int
    scores: list[CandidateScore]
    baseline_r2_cv: float  # predicting the training mean: what "no predictor" scores
    skipped: list[str] = field(default_factory=list)
    feature_sets: list[FeatureSet] = field(default_factory=list)

    @property
    def best(self) -> CandidateScore:
        """The exported predictor."""
        return self.scores[0]


def _rank(scores: list[CandidateScore]) -> list[CandidateScore]:
    return sorted(scores, key=lambda s: (-s.r2_cv, len(s.fit.features), s.label))


def compare_predictors(X: pd.DataFrame, y: np.ndarray, groups: np.ndarray | None, seed: int,
                       feature_sets: list[FeatureSet] | None = None) -> Comparison:
    """Score every candidate predictor on every feature set (default: all columns of ``X``) under the
    same cross-validation splits."""
    from gradprune.plugins import PREDICTORS

    sets = feature_sets or [FeatureSet(ALL, tuple(X.columns))]
    scheme = cv_scheme(len(y), groups, seed)
    max_features = max(1, scheme.units // 4)
    scores, skipped = [], []
    for fs in sets:
        folds = make_folds(X[list(fs.columns)], y, scheme)
        for name, params in candidate_specs(list(fs.columns)):
            try:
                predictor = PREDICTORS.build(name, params)
                fit = predictor.fit(X[list(fs.columns)], y, max_features)
                cv = cv_predictions(predictor, folds, len(y), max_features)
            except PluginError as exc:  # a broken third-party predictor must not stop the analysis
                if not any(s.startswith(f"{name}:") for s in skipped):
                    skipped.append(f"{name}: {exc}")
                continue
            pred = fit.predict(X)
            scores.append(CandidateScore(name, params, fit, r2(y, pred), mae(y, pred), r2(y, cv), mae(y, cv),
                                         fs.name))
    baseline = np.empty(len(y))
    for train, test in scheme.splits:
        baseline[test] = y[train].mean()
    return Comparison(scheme, max_features, _rank(scores), r2(y, baseline), skipped, list(sets))


# ---- nested cross-validation and the permutation test --------------------------------------------


@dataclass(frozen=True)
class RoleScore:
    """The choice among the predictors on some feature sets, judged without optimism."""

    name: str  # e.g. "settings", or "default" for the exported model's sets
    feature_sets: tuple[str, ...]
    best: CandidateScore  # chosen on all rows
    r2_cv_nested: float  # the choice repeated inside every outer training fold
    mae_cv_nested: float
    p_value: float  # permutation p of the best candidate's cross-validated R²
    permutations: int  # how many were drawn (sequential stopping)
    exceedances: int


def _sliced(X: pd.DataFrame, splits: list[tuple[np.ndarray, np.ndarray]]) -> list[tuple[pd.DataFrame, pd.DataFrame]]:
    return [(X.iloc[train], X.iloc[test]) for train, test in splits]


def _cv_matrix(predictors: list[Predictor], data: list[list[tuple[pd.DataFrame, pd.DataFrame]]],
               splits: list[tuple[np.ndarray, np.ndarray]], y: np.ndarray, max_features: int) -> np.ndarray:
    """(candidates, rows) cross-validated predictions of every candidate for target ``y``."""
    out = np.empty((len(predictors), len(y)))
    for k, (predictor, folds) in enumerate(zip(predictors, data, strict=True)):
        for (train, test), (X_train, X_test) in zip(splits, folds, strict=True):
            out[k, test] = predictor.fit(X_train, y[train], max_features).predict(X_test)
    return out


def permuted_targets(y: np.ndarray, groups: np.ndarray | None, rng: np.random.Generator,
                     strata: np.ndarray | None = None) -> np.ndarray:
    """``y`` shuffled within the design: rows, or with replicates whole configs (a config's targets move
    together to another config of the same size, keeping their order); with ``strata`` (a pruning ratio,
    a model), only within each stratum, so the null keeps every stratum's own targets."""
    if strata is not None:
        out = y.copy()
        for s in dict.fromkeys(strata):
            idx = np.flatnonzero(strata == s)
            out[idx] = permuted_targets(y[idx], None if groups is None else groups[idx], rng)
        return out
    if groups is None:
        return rng.permutation(y)
    out = y.copy()
    members: dict[Any, np.ndarray] = {g: np.flatnonzero(groups == g) for g in dict.fromkeys(groups)}
    by_size: dict[int, list[np.ndarray]] = {}
    for idx in members.values():
        by_size.setdefault(len(idx), []).append(idx)
    for blocks in by_size.values():
        for dest, k in zip(blocks, rng.permutation(len(blocks)), strict=True):
            out[dest] = y[blocks[k]]
    return out


def judge_roles(X: pd.DataFrame, y: np.ndarray, groups: np.ndarray | None, comparison: Comparison,
                roles: dict[str, tuple[str, ...]], seed: int, n_permutations: int = N_PERMUTATIONS,
                stop_after: int = STOP_AFTER, strata: np.ndarray | None = None) -> dict[str, RoleScore]:
    """Nested cross-validated R² and permutation p-value of the choice among the candidates of
    ``comparison`` restricted to each entry of ``roles`` (name → feature-set names).

    One set of refits serves every role: each candidate's cross-validated predictions (the outer folds
    of the comparison) and its inner cross-validated R² in every outer training fold. ``strata``: the
    targets are shuffled only within each stratum (see :func:`permuted_targets`).
    """
    import sklearn

    with sklearn.config_context(assume_finite=True, skip_parameter_validation=True):  # inputs checked once
        return _judge_roles(X, y, groups, comparison, roles, seed, n_permutations, stop_after, strata)


def _judge_roles(X: pd.DataFrame, y: np.ndarray, groups: np.ndarray | None, comparison: Comparison,
                 roles: dict[str, tuple[str, ...]], seed: int, n_permutations: int,
                 stop_after: int, strata: np.ndarray | None = None) -> dict[str, RoleScore]:
    from gradprune.plugins import PREDICTORS

    scheme, cap = comparison.scheme, comparison.max_features
    scores = comparison.scores
    sets = {fs.name: fs.columns for fs in comparison.feature_sets}
    predictors = [PREDICTORS.build(s.name, s.params) for s in scores]
    frames = {name: X[list(cols)] for name, cols in sets.items()}
    outer = {name: _sliced(f, scheme.splits) for name, f in frames.items()}
    data = [outer[s.feature_set] for s in scores]
    outer_pred = _cv_matrix(predictors, data, scheme.splits, y, cap)
    # inner cross-validated R² of every candidate inside every outer training fold
    inner_r2 = np.empty((len(scheme.splits), len(scores)))
    for j, (train, _) in enumerate(scheme.splits):
        inner_groups = None if groups is None or len(np.unique(groups[train])) < 2 else groups[train]
        inner = cv_scheme(len(train), inner_groups, seed + 1 + j)  # one config left: its rows are the units
        sub = {name: _sliced(f.iloc[train], inner.splits) for name, f in frames.items()}
        pred = _cv_matrix(predictors, [sub[s.feature_set] for s in scores], inner.splits, y[train], cap)
        inner_r2[j] = [r2(y[train], p) for p in pred]
    members = {role: [k for k, s in enumerate(scores) if s.feature_set in names] for role, names in roles.items()}
    members = {role: ks for role, ks in members.items() if ks}
    nested: dict[str, np.ndarray] = {}
    for role, ks in members.items():
        pred = np.empty(len(y))
        for j, (_, test) in enumerate(scheme.splits):
            choice = ks[int(np.argmax(inner_r2[j, ks]))]
            pred[test] = outer_pred[choice, test]
        nested[role] = pred
    observed = {role: max(scores[k].r2_cv for k in ks) for role, ks in members.items()}
    # permutation test with sequential stopping per role: p = h / l at the h-th exceedance, else (k + 1) / (B + 1)
    rng = np.random.default_rng(seed)
    counts = dict.fromkeys(members, 0)
    stopped: dict[str, tuple[float, int]] = {}
    drawn = 0
    while drawn < n_permutations and len(stopped) < len(members):
        y_perm = permuted_targets(y, groups, rng, strata)
        drawn += 1
        active = [role for role in members if role not in stopped]
        needed = sorted({k for role in active for k in members[role]})
        pred = _cv_matrix([predictors[k] for k in needed], [data[k] for k in needed], scheme.splits, y_perm, cap)
        r2_perm = dict(zip(needed, (r2(y_perm, p) for p in pred), strict=True))
        for role in active:
            if max(r2_perm[k] for k in members[role]) >= observed[role] - 1e-12:
                counts[role] += 1
                if counts[role] >= stop_after:
                    stopped[role] = (counts[role] / drawn, drawn)
    out = {}
    for role, ks in members.items():
        p, used = stopped.get(role, ((counts[role] + 1) / (drawn + 1), drawn))
        best = min((scores[k] for k in ks), key=lambda s: (-s.r2_cv, len(s.fit.features), s.label))
        out[role] = RoleScore(role, roles[role], best, r2(y, nested[role]), mae(y, nested[role]), float(p), used,
                              counts[role])
    return out
