"""``gradprune predict``: run.json and CSV inputs, range warnings, clear errors, --output."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from gradprune.analysis.predict import read_inputs
from gradprune.cli import main


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, planted):
    d = tmp_path_factory.mktemp("model")
    df = planted()
    df.to_csv(d / "search_results.csv", index=False)
    assert main(["analyze", str(d / "search_results.csv")]) == 0
    return d, df


def _run_json(path, metrics, recipe=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"recipe": recipe or {}, "metrics": metrics}))
    return path


def test_csv_round_trip_reproduces_training_predictions(model_dir, tmp_path):
    d, df = model_dir
    model = json.loads((d / "prediction_model.json").read_text())
    out = tmp_path / "pred.csv"
    assert main(["predict", str(d / "prediction_model.json"), str(d / "search_results.csv"), "--output", str(out)]) == 0
    pred = pd.read_csv(out)
    if model["isotonic"] is not None:  # the monotone predictor won: sklearn refits it independently
        from sklearn.isotonic import IsotonicRegression

        iso = model["isotonic"]
        ref = IsotonicRegression(increasing=iso["increasing"], out_of_bounds="clip").fit(df[iso["feature"]], df.acc_mean)
        expected = pd.Series(ref.predict(df[iso["feature"]]))
    else:
        expected = model["intercept"] + sum(model["coefficients"][f] * df[f] for f in model["features"])
    assert pred["predicted_acc_mean"].to_numpy() == pytest.approx(expected.to_numpy(), abs=1e-9)
    assert not pred["extrapolated"].any()
    assert pred["acc_mean"].to_numpy() == pytest.approx(df["acc_mean"].to_numpy())  # measured, for comparison
    in_sample = 1 - ((pred.acc_mean - pred.predicted_acc_mean) ** 2).sum() / ((df.acc_mean - df.acc_mean.mean()) ** 2).sum()
    assert in_sample == pytest.approx(model["metrics"]["r2_in_sample"])


def test_run_json_with_range_warning(model_dir, tmp_path, capsys):
    d, df = model_dir
    model = json.loads((d / "prediction_model.json").read_text())
    metrics = {f: float(df[f].median()) for f in model["features"]}
    inside = _run_json(tmp_path / "a" / "run.json", metrics)
    outside = _run_json(tmp_path / "b" / "run.json", {**metrics, "grad_norm_ratio": 99.0})
    assert main(["predict", str(d / "prediction_model.json"), str(inside), str(outside)]) == 0
    captured = capsys.readouterr()
    assert "grad_norm_ratio = 99 lies outside the training range" in captured.err
    assert str(outside) in captured.err and str(inside) not in captured.err
    assert "predicted_acc_mean" in captured.out


def test_recipe_keys_are_found_too(tmp_path):
    path = _run_json(tmp_path / "run.json", {"ppl": 20.0}, recipe={"calibration": {"seq_len": 64}})
    row = read_inputs([path]).iloc[0]
    assert row["calibration.seq_len"] == 64 and row["ppl"] == 20.0


def test_missing_feature_is_a_clear_error(model_dir, tmp_path, capsys):
    d, _ = model_dir
    path = _run_json(tmp_path / "run.json", {"ppl": 20.0})
    assert main(["predict", str(d / "prediction_model.json"), str(path)]) == 2
    err = capsys.readouterr().err
    assert "missing feature(s) grad_norm_ratio" in err and str(path) in err


def test_non_numeric_value_is_a_clear_error(model_dir, tmp_path, capsys):
    d, df = model_dir
    model = json.loads((d / "prediction_model.json").read_text())
    path = _run_json(tmp_path / "run.json", {**{f: 1.0 for f in model["features"]}, "grad_norm_ratio": "high"})
    assert main(["predict", str(d / "prediction_model.json"), str(path)]) == 2
    assert "non-numeric" in capsys.readouterr().err


@pytest.mark.parametrize("bad", ["search_results.csv", "nope.json", "report.json"])
def test_not_a_prediction_model(model_dir, tmp_path, capsys, bad):
    d, _ = model_dir
    model = d / bad if bad != "report.json" else tmp_path / bad
    if bad == "report.json":
        model.write_text('{"metrics": {}}')
    out = tmp_path / "pred.csv"
    assert main(["predict", str(model), str(d / "search_results.csv"), "--output", str(out)]) == 2
    assert "prediction_model.json" in capsys.readouterr().err
    assert not out.exists()


def test_run_json_without_metrics(model_dir, tmp_path, capsys):
    d, _ = model_dir
    path = tmp_path / "run.json"
    path.write_text('{"recipe": {}}')
    assert main(["predict", str(d / "prediction_model.json"), str(path)]) == 2
    assert "no 'metrics' object" in capsys.readouterr().err


def test_csv_rows_are_numbered_from_1_as_analyze_numbers_them(tmp_path):
    runs = tmp_path / "runs.csv"
    pd.DataFrame({"trial": [0, 7], "grad_norm_ratio": [3.0, 4.0]}).to_csv(runs, index=False)
    assert list(read_inputs([runs])["input"]) == [f"{runs}:row 1 (trial 0)", f"{runs}:row 2 (trial 7)"]
    pd.DataFrame({"grad_norm_ratio": [3.0]}).to_csv(runs, index=False)
    assert list(read_inputs([runs])["input"]) == [f"{runs}:row 1"]


def _linear_model(df) -> dict:
    """The best linear predictor of the planted CSV, as analyze exports one."""
    from dataclasses import replace

    from gradprune.prediction.model import build_model
    from gradprune.prediction.selection import compare_predictors

    X = df[["grad_norm_ratio", "grad_max_ratio", "taylor_seq_len"]]
    cmp = compare_predictors(X, df["acc_mean"].to_numpy(), None, seed=0)
    cmp = replace(cmp, scores=[s for s in cmp.scores if s.name != "isotonic"])
    return json.loads(build_model("acc_mean", cmp, X, None, "s.csv").model_dump_json())


def test_a_consistently_edited_model_is_used_as_edited(model_dir, tmp_path, capsys):
    d, df = model_dir
    model = _linear_model(df)
    f = model["features"][0]
    # the effect of the first feature doubled, in both forms; the formula text left as it was
    model["coefficients"][f] *= 2
    model["standardized_coefficients"][f] *= 2
    shift = model["coefficients"][f] / 2 * model["standardisation"]["means"][f]
    model["intercept"] -= shift
    edited = tmp_path / "edited.json"
    edited.write_text(json.dumps(model))
    out = tmp_path / "pred.csv"
    assert main(["predict", str(edited), str(d / "search_results.csv"), "--output", str(out)]) == 0
    expected = model["intercept"] + sum(model["coefficients"][g] * df[g] for g in model["features"])
    assert pd.read_csv(out)["predicted_acc_mean"].to_numpy() == pytest.approx(expected.to_numpy(), abs=1e-9)
    captured = capsys.readouterr()
    assert "its formula" in captured.err and "does not match its coefficients" in captured.err
    assert f"{abs(model['coefficients'][f]):.4g} × {f}" in captured.out  # the formula applied is shown
