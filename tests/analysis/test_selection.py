"""Cross-validation: LOO R² on a case worked by hand; leave-one-config-out keeps configs whole."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import r2_score

from gradprune.prediction import selection
from gradprune.prediction.predictors import SingleFeaturePredictor
from gradprune.prediction.selection import (
    compare_predictors,
    cv_predictions,
    cv_scheme,
    judge_roles,
    mae,
    make_folds,
    permuted_targets,
    r2,
)


def test_loo_r2_worked_by_hand():
    # points (0,1) (1,2) (2,3) (3,6); a line through the other three predicts each point:
    #   leave out x=0: slope 2,    intercept -1/3 → -1/3  (error  4/3)
    #   leave out x=1: slope 11/7, intercept  5/7 → 16/7  (error -2/7)
    #   leave out x=2: slope 12/7, intercept  5/7 → 29/7  (error -8/7)
    #   leave out x=3: slope 1,    intercept  1   → 4     (error  2)
    # PRESS = 16/9 + 4/49 + 64/49 + 4 = 3160/441; SST = 14 → R²_cv = 1 − 3160/6174 = 1507/3087
    X = pd.DataFrame({"x": [0.0, 1, 2, 3]})
    y = np.array([1.0, 2, 3, 6])
    scheme = cv_scheme(4, None, seed=0)
    assert scheme.name == "leave-one-out" and len(scheme.splits) == 4
    predictor = SingleFeaturePredictor(SingleFeaturePredictor.Params(feature="x"))
    pred = cv_predictions(predictor, make_folds(X, y, scheme), 4, 1)
    assert pred == pytest.approx([-1 / 3, 16 / 7, 29 / 7, 4])
    assert r2(y, pred) == pytest.approx(1507 / 3087)
    assert mae(y, pred) == pytest.approx(25 / 21)


def test_baseline_mean_worked_by_hand():
    # LOO means of the others: 11/3, 10/3, 3, 2 → errors -8/3, -4/3, 0, 4; PRESS 224/9; R² = 1 − 16/9
    X = pd.DataFrame({"x": [0.0, 1, 2, 3]})
    cmp = compare_predictors(X, np.array([1.0, 2, 3, 6]), None, seed=0)
    assert cmp.baseline_r2_cv == pytest.approx(-7 / 9)
    assert cmp.max_features == 1
    single = next(s for s in cmp.scores if s.name == "single_feature")
    assert single.r2_cv == pytest.approx(1507 / 3087)


def test_leave_one_config_out_keeps_replicates_together(replicates, monkeypatch):
    monkeypatch.setattr(selection, "MAX_LOO_FOLDS", 15)
    df = replicates(effect=0.05)
    groups = df["config_id"].astype(str).to_numpy()
    scheme = cv_scheme(len(df), groups, seed=0)
    assert scheme.name == "leave-one-config-out" and len(scheme.splits) == 15 and scheme.units == 15
    for train, test in scheme.splits:
        assert len(set(groups[test])) == 1
        assert not set(groups[train]) & set(groups[test])
    assert sorted(np.concatenate([t for _, t in scheme.splits]).tolist()) == list(range(len(df)))


def test_many_configs_fall_back_to_grouped_kfold(monkeypatch, replicates):
    monkeypatch.setattr(selection, "MAX_LOO_FOLDS", 10)
    df = replicates(effect=0.05)
    groups = df["config_id"].to_numpy()
    scheme = cv_scheme(len(df), groups, seed=0)
    assert "by config" in scheme.name
    for train, test in scheme.splits:
        assert not set(groups[train]) & set(groups[test])
    assert cv_scheme(30, None, seed=0).name == f"{selection.K_FOLDS}-fold"


def test_best_candidate_first_and_feature_cap(planted):
    df = planted()
    X = df[["grad_norm_ratio", "ppl", "taylor_seq_len", "grad_max_ratio", "grad_mean_ratio"]]
    cmp = compare_predictors(X, df["acc_mean"].to_numpy(), None, seed=0)
    assert cmp.best.r2_cv == max(s.r2_cv for s in cmp.scores)
    assert "grad_norm_ratio" in cmp.best.fit.features
    assert all(len(s.fit.features) <= 30 // 4 for s in cmp.scores)
    assert {s.label for s in cmp.scores} >= {"ols", "ridge", "single_feature"}


def _one_candidate(X, y, groups=None):
    cmp = compare_predictors(X, y, groups, seed=0)
    only = [s for s in cmp.scores if s.name == "ols"]
    return replace(cmp, scores=only)


def test_nested_cv_of_a_single_candidate_equals_sklearn_cross_val_predict():
    # with one candidate there is nothing to choose: the nested predictions are its plain CV predictions,
    # which sklearn computes independently (one feature, so OLS keeps it whenever BIC does)
    from sklearn.linear_model import LinearRegression
    from sklearn.model_selection import KFold, cross_val_predict

    rng = np.random.default_rng(3)
    x = rng.uniform(0, 1, 24)
    X = pd.DataFrame({"g": x})
    y = 2 * x + rng.normal(0, 0.1, 24)
    cmp = _one_candidate(X, y)
    judged = judge_roles(X, y, None, cmp, {"all": (selection.ALL,)}, seed=0)["all"]
    ref = cross_val_predict(LinearRegression(), X, y, cv=KFold(10, shuffle=True, random_state=0))
    assert judged.r2_cv_nested == pytest.approx(r2_score(y, ref), abs=1e-9)
    assert judged.p_value == pytest.approx(1 / 100) and judged.permutations == 99 and judged.exceedances == 0


def test_permutation_p_of_noise_is_not_small_and_stops_early():
    rng = np.random.default_rng(5)
    X = pd.DataFrame(rng.normal(size=(20, 3)), columns=["a", "b", "c"])
    y = rng.normal(size=20)
    cmp = compare_predictors(X, y, None, seed=0)
    judged = judge_roles(X, y, None, cmp, {"all": (selection.ALL,)}, seed=0)["all"]
    assert judged.p_value > 0.05
    if judged.exceedances >= selection.STOP_AFTER:  # Besag–Clifford: p = h / l at the h-th exceedance
        assert judged.p_value == pytest.approx(selection.STOP_AFTER / judged.permutations)


def test_permutations_move_whole_configs():
    groups = np.repeat(np.array(["a", "b", "c", "d"]), 3)
    y = np.arange(12.0)
    rng = np.random.default_rng(0)
    for _ in range(5):
        out = permuted_targets(y, groups, rng)
        blocks = {tuple(out[groups == g]) for g in "abcd"}
        assert blocks == {tuple(y[groups == g]) for g in "abcd"}  # each config's targets travel together
    # configs of another size are never swapped with these
    uneven = np.array(["a", "a", "b", "b", "c"])
    assert permuted_targets(np.arange(5.0), uneven, rng)[4] == 4.0
