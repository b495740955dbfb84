"""Predictor plugins: every registered one fits, respects n/4, and its params are checked."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from gradprune.errors import GradpruneError, PluginError
from gradprune.plugins import PREDICTORS
from gradprune.prediction.predictors import (
    IsotonicFit,
    IsotonicPredictor,
    LinearFit,
    OLSPredictor,
    Predictor,
    SingleFeaturePredictor,
    forward_selection,
    standardise,
)


def test_registered_names_snapshot():
    assert {"ols", "ridge", "single_feature", "isotonic"} <= set(PREDICTORS.names())


@pytest.mark.parametrize("name", PREDICTORS.names())
def test_every_predictor_fits_within_the_feature_cap(name, planted):
    df = planted()
    X = df[["grad_norm_ratio", "ppl", "taylor_seq_len", "grad_max_ratio"]]
    y = df["acc_mean"].to_numpy()
    predictor = PREDICTORS.build(name)
    assert isinstance(predictor, Predictor)
    fit = predictor.fit(X, y, max_features=2)
    assert isinstance(fit, LinearFit | IsotonicFit) and 1 <= len(fit.features) <= 2
    assert "grad_norm_ratio" in fit.features
    assert np.corrcoef(fit.predict(X), y)[0, 1] > 0.9


@pytest.mark.parametrize("name", ["ols", "ridge", "single_feature"])
def test_params_are_checked(name):
    with pytest.raises(PluginError, match="unknown key"):
        PREDICTORS.build(name, {"no_such_param": 1})


def test_single_feature_equals_polyfit_and_raw_units(planted):
    df = planted()
    fit = SingleFeaturePredictor(SingleFeaturePredictor.Params(feature="ppl")).fit(df, df["acc_mean"].to_numpy(), 1)
    slope, intercept = np.polyfit(df["ppl"], df["acc_mean"], 1)
    assert fit.raw_coefficients()["ppl"] == pytest.approx(slope)
    assert fit.raw_intercept() == pytest.approx(intercept)
    with pytest.raises(GradpruneError, match="no feature column 'nope'"):
        SingleFeaturePredictor(SingleFeaturePredictor.Params(feature="nope")).fit(df, df["acc_mean"].to_numpy(), 1)


def test_ols_equals_sklearn_on_its_chosen_features(planted):
    from sklearn.linear_model import LinearRegression

    df = planted()
    X = df[["grad_norm_ratio", "ppl", "grad_mean_ratio"]]
    y = df["acc_mean"].to_numpy()
    fit = OLSPredictor().fit(X, y, max_features=3)
    ref = LinearRegression().fit(X[list(fit.features)], y)
    assert fit.predict(X) == pytest.approx(ref.predict(X[list(fit.features)]))


def test_forward_selection_stops_when_bic_stops_improving():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(50, 4))
    y = 2 * z[:, 2] + rng.normal(0, 0.1, 50)
    chosen = forward_selection(z - z.mean(0), y, cap=4, penalty=np.log(50))
    assert chosen[0] == 2 and len(chosen) <= 2


def test_constant_features_are_dropped_by_standardise():
    X = pd.DataFrame({"a": [1.0, 1.0, 1.0], "b": [1.0, 2.0, 3.0]})
    z, names, means, scales = standardise(X)
    assert names == ["b"] and z.shape == (3, 1)
    flat = SingleFeaturePredictor(SingleFeaturePredictor.Params(feature="a")).fit(X, np.array([1.0, 2, 3]), 1)
    assert flat.features == () and flat.predict(X) == pytest.approx([2.0, 2.0, 2.0])


def test_isotonic_equals_sklearn_on_the_most_monotone_feature():
    from sklearn.isotonic import IsotonicRegression

    rng = np.random.default_rng(1)
    x = rng.uniform(0, 1, 40)
    X = pd.DataFrame({"noise": rng.normal(size=40), "g": x})
    y = np.exp(-4 * x) + rng.normal(0, 0.01, 40)  # Spearman ≈ −1, Pearson clearly weaker
    fit = IsotonicPredictor().fit(X, y, 3)
    assert fit.features == ("g",) and not fit.increasing
    ref = IsotonicRegression(increasing=False, out_of_bounds="clip").fit(x, y)
    probe = pd.DataFrame({"noise": 0.0, "g": np.linspace(-0.2, 1.2, 50)})
    assert fit.predict(probe) == pytest.approx(ref.predict(probe["g"].to_numpy()), abs=1e-12)
