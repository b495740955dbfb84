"""Applying a prediction_model.json to runs: run.json files (their ``metrics`` object) or CSV rows."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from gradprune.analysis.loading import read_table
from gradprune.errors import GradpruneError
from gradprune.prediction.model import PredictionModel

INPUT = "input"


def _flatten(obj: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for k, v in obj.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            yield from _flatten(v, key + ".")
        else:
            yield key, v


def read_run_json(path: Path) -> pd.DataFrame:
    """One row from a run.json: its ``metrics`` (flat names, as in the search CSV) over its recipe's
    dotted keys (``calibration.seq_len`` …), so grid-key features are found too."""
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise GradpruneError(f"{path}: not JSON ({exc}); expected a run.json written by gradprune run") from None
    if not isinstance(obj, dict) or not isinstance(obj.get("metrics"), dict):
        raise GradpruneError(f"{path}: no 'metrics' object; expected a run.json written by gradprune run")
    recipe = obj.get("recipe") if isinstance(obj.get("recipe"), dict) else {}
    row = {**dict(_flatten(recipe)), **obj["metrics"]}
    return pd.DataFrame([{INPUT: str(path), **row}])


def read_inputs(paths: Sequence[str | Path]) -> pd.DataFrame:
    """All runs to predict, one row each, with an ``input`` column naming where each row came from."""
    frames = []
    for raw in paths:
        p = Path(raw)
        if not p.is_file():
            what = "is a directory" if p.is_dir() else "file not found"
            raise GradpruneError(f"{p}: {what} (expected a run.json or a CSV of runs)")
        if p.suffix.lower() == ".json":
            frames.append(read_run_json(p))
            continue
        df = read_table(p, min_columns=1)
        # rows counted from 1 as analyze names them (the header is not a row); a search's trial number beside
        trials = df["trial"].astype(str) if "trial" in df.columns else None
        df.insert(0, INPUT, [f"{p}:row {i + 1}" + ("" if trials is None else f" (trial {trials.iloc[i]})")
                             for i in range(len(df))])
        frames.append(df)
    return pd.concat(frames, ignore_index=True)


def feature_matrix(model: PredictionModel, runs: pd.DataFrame) -> pd.DataFrame:
    """The model's features of every run as floats; a missing or non-numeric value raises GradpruneError."""
    absent = [f for f in model.features if f not in runs.columns]
    if absent:
        sources = ", ".join(sorted({s.rsplit(":row ", 1)[0] for s in runs[INPUT]}))
        raise GradpruneError(
            f"{sources}: missing feature(s) {', '.join(absent)} needed by the prediction model of {model.target} "
            f"(features: {', '.join(model.features)})"
        )
    X = runs[model.features].apply(pd.to_numeric, errors="coerce")
    bad = X.isna()
    if bad.any().any():
        where = [f"{runs[INPUT][i]}: {f}" for f in model.features for i in np.flatnonzero(bad[f].to_numpy())]
        raise GradpruneError(f"missing or non-numeric feature value(s): {'; '.join(where[:10])}")
    return X.astype(float)


def outside_range(model: PredictionModel, X: pd.DataFrame) -> pd.DataFrame:
    """True where a feature value lies outside the range the model was trained on."""
    return pd.DataFrame({f: ~X[f].between(model.training_ranges[f].min, model.training_ranges[f].max)
                         for f in model.features}, index=X.index)


def predict_runs(model: PredictionModel, runs: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """A table of input, features, prediction (and the measured target where present), and one warning per
    feature value outside its training range."""
    X = feature_matrix(model, runs)
    outside = outside_range(model, X)
    warnings = [f"{runs[INPUT][i]}: {f} = {X[f][i]:.6g} lies outside the training range "
                f"[{model.training_ranges[f].min:.6g}, {model.training_ranges[f].max:.6g}]; the prediction extrapolates"
                for f in model.features for i in np.flatnonzero(outside[f].to_numpy())]
    table = pd.concat([runs[[INPUT]], X], axis=1)
    table[f"predicted_{model.target}"] = model.predict(X)
    if model.target in runs.columns:
        actual = pd.to_numeric(runs[model.target], errors="coerce")
        if actual.notna().any():
            table[model.target] = actual
    table["extrapolated"] = outside.any(axis=1) if model.features else False
    return table, warnings


def fmt_cell(v: Any) -> str:
    """A table cell: numbers to 4 significant digits, missing as –."""
    if isinstance(v, bool | np.bool_):
        return "yes" if v else ""
    if isinstance(v, int | float | np.floating | np.integer):
        return f"{v:.4g}" if math.isfinite(v) else "–"
    return str(v)
