"""Cross-validated comparison of every registered predictor; the best by cross-validated R² wins.

Rows are left out one at a time (leave-one-out); with replicates whole configs are left out
(leave-one-config-out), so replicates of one config never sit on both sides of a split. Above
MAX_LOO_FOLDS units the n refits buy little over 20-fold cross-validation, which is used instead.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from gradprune.analysis.predictors import LinearFit, Predictor
from gradprune.errors import PluginError

MAX_LOO_FOLDS = 100
K_FOLDS = 20


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


@dataclass(frozen=True)
class CandidateScore:
    """One predictor (registry name + params): its fit on all rows and its scores."""

    name: str
    params: dict[str, Any]
    fit: LinearFit
    r2: float
    mae: float
    r2_cv: float
    mae_cv: float

    @property
    def label(self) -> str:
        """``name`` or ``name(key=value)`` for tables."""
        args = ", ".join(f"{k}={v}" for k, v in self.params.items())
        return f"{self.name}({args})" if args else self.name


def score_candidate(name: str, params: dict[str, Any], X: pd.DataFrame, y: np.ndarray, folds: list[Fold],
                    max_features: int) -> CandidateScore:
    """Fit the registered predictor ``name`` on all rows and cross-validate it."""
    from gradprune.plugins import PREDICTORS

    predictor = PREDICTORS.build(name, params)
    fit = predictor.fit(X, y, max_features)
    cv = cv_predictions(predictor, folds, len(y), max_features)
    pred = fit.predict(X)
    return CandidateScore(name, params, fit, r2(y, pred), mae(y, pred), r2(y, cv), mae(y, cv))


def candidate_specs(features: list[str]) -> list[tuple[str, dict[str, Any]]]:
    """Every registered predictor with default params; the one-feature predictor once per feature."""
    from gradprune.plugins import PREDICTORS

    specs: list[tuple[str, dict[str, Any]]] = []
    single = PREDICTORS.get("single_feature")
    for name in PREDICTORS.names():
        try:
            is_single = PREDICTORS.get(name) is single
        except PluginError:  # a broken plugin: score_candidate reports it as skipped, with the reason
            is_single = False
        if is_single:
            specs += [(name, {"feature": f}) for f in features]
        else:
            specs.append((name, {}))
    return specs


@dataclass(frozen=True)
class Comparison:
    """All candidates, best (highest cross-validated R², then fewest features) first."""

    scheme: CVScheme
    max_features: int
    scores: list[CandidateScore]
    baseline_r2_cv: float  # predicting the training mean: what "no predictor" scores
    skipped: list[str] = field(default_factory=list)

    @property
    def best(self) -> CandidateScore:
        """The exported predictor."""
        return self.scores[0]


def compare_predictors(X: pd.DataFrame, y: np.ndarray, groups: np.ndarray | None, seed: int) -> Comparison:
    """Score every candidate predictor on ``X`` → ``y`` under the same cross-validation splits."""
    scheme = cv_scheme(len(y), groups, seed)
    max_features = max(1, scheme.units // 4)
    folds = make_folds(X, y, scheme)
    scores, skipped = [], []
    for name, params in candidate_specs(list(X.columns)):
        try:
            scores.append(score_candidate(name, params, X, y, folds, max_features))
        except PluginError as exc:  # a broken third-party predictor must not stop the analysis
            skipped.append(f"{name}: {exc}")
    scores.sort(key=lambda s: (-s.r2_cv, len(s.fit.features), s.label))
    baseline = np.empty(len(y))
    for train, test in scheme.splits:
        baseline[test] = y[train].mean()
    return Comparison(scheme, max_features, scores, r2(y, baseline), skipped)
