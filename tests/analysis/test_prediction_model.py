"""prediction_model.json: the JSON round trip reproduces the training predictions; bad files are refused."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from gradprune.errors import GradpruneError
from gradprune.prediction.model import FORMAT_VERSION, build_model, formula, load_model
from gradprune.prediction.predictors import LinearFit
from gradprune.prediction.selection import compare_predictors


@pytest.fixture
def fitted(planted):
    df = planted()
    X = df[["grad_norm_ratio", "ppl", "taylor_seq_len"]]
    cmp = compare_predictors(X, df["acc_mean"].to_numpy(), None, seed=0)
    cmp = replace(cmp, scores=[s for s in cmp.scores if s.name != "isotonic"])  # the linear export
    return X, cmp, build_model("acc_mean", cmp, X, None, "search_results.csv")


def test_isotonic_round_trip(planted, tmp_path):
    from sklearn.isotonic import IsotonicRegression

    df = planted()
    X = df[["grad_norm_ratio", "taylor_seq_len"]]
    y = df["acc_mean"].to_numpy()
    cmp = compare_predictors(X, y, None, seed=0)
    cmp = replace(cmp, scores=[s for s in cmp.scores if s.name == "isotonic"])
    path = tmp_path / "prediction_model.json"
    path.write_text(build_model("acc_mean", cmp, X, None, "s.csv").model_dump_json(indent=2))
    loaded = load_model(path)
    assert loaded.isotonic is not None and loaded.features == ["grad_norm_ratio"] and loaded.coefficients == {}
    ref = IsotonicRegression(increasing=False, out_of_bounds="clip").fit(X["grad_norm_ratio"], y)
    assert loaded.predict(X) == pytest.approx(ref.predict(X["grad_norm_ratio"]), abs=1e-12)
    assert "decreasing step-wise linear function of grad_norm_ratio" in loaded.formula


def test_round_trip_reproduces_training_predictions(fitted, tmp_path):
    X, cmp, model = fitted
    path = tmp_path / "prediction_model.json"
    path.write_text(model.model_dump_json(indent=2))
    loaded = load_model(path)
    assert loaded.predict(X) == pytest.approx(cmp.best.fit.predict(X), abs=1e-12)
    raw = loaded.intercept + sum(loaded.coefficients[f] * X[f].to_numpy() for f in loaded.features)
    assert raw == pytest.approx(cmp.best.fit.predict(X), abs=1e-10)  # the original-unit form agrees


def test_contents(fitted):
    X, cmp, model = fitted
    obj = json.loads(model.model_dump_json())
    assert obj["format"] == "gradprune.prediction_model" and obj["format_version"] == FORMAT_VERSION
    assert obj["target"] == "acc_mean" and "grad_norm_ratio" in obj["features"]
    assert obj["n"] == len(X) and obj["metrics"]["cv"] == "10-fold"
    assert obj["metrics"]["r2_cv"] == pytest.approx(cmp.best.r2_cv)
    for f in obj["features"]:
        assert obj["training_ranges"][f] == {"min": X[f].min(), "max": X[f].max()}
        assert set(obj["standardisation"]) == {"means", "scales"}
    assert obj["formula"].startswith("acc_mean ≈ ")


def test_formula_reads_like_a_paper():
    fit = LinearFit(("g", "s"), (-2.0, 0.5), 1.0, (10.0, 4.0), (4.0, 2.0))
    # raw: g coef -0.5, s coef 0.25, intercept 1 + 5 - 1 = 5
    assert formula("acc_mean", fit) == "acc_mean ≈ 5 − 0.5 × g + 0.25 × s"
    assert formula("acc_mean", LinearFit((), (), 0.61, (), ())) == "acc_mean ≈ 0.61"


@pytest.mark.parametrize(("content", "message"), [
    ("not json at all", "not JSON"),
    ('{"metrics": {}}', "not a gradprune prediction model"),
    ('[1, 2]', "not a gradprune prediction model"),
    ('{"format": "gradprune.prediction_model", "format_version": 99}', "format_version 99"),
    ('{"format": "gradprune.prediction_model", "format_version": 1, "target": "x"}', "invalid prediction model"),
])
def test_bad_files_are_refused(tmp_path, content, message):
    path = tmp_path / "model.json"
    path.write_text(content)
    with pytest.raises(GradpruneError, match=message) as err:
        load_model(path)
    assert str(path) in str(err.value)


def test_missing_file(tmp_path):
    with pytest.raises(GradpruneError, match="file not found"):
        load_model(tmp_path / "nope.json")


def test_predict_has_no_nan_for_flat_model(fitted):
    X, _, model = fitted
    flat = model.model_copy(update={"features": [], "standardized_intercept": 0.6})
    assert np.all(flat.predict(X) == 0.6)
