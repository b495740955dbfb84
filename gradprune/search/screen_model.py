"""The prediction model of predictor screening: the analysis module's predictors, fitted on the trials
evaluated so far, applied to the screened ones."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from gradprune.errors import GradpruneError


def fit_and_predict(evaluated: pd.DataFrame, screened: pd.DataFrame, features: list[str], target: str,
                    seed: int) -> tuple[np.ndarray | None, dict[str, Any]]:
    """Predicted ``target`` of every screened row (NaN where a feature is missing) and a description of
    the model; ``(None, {"error": ...})`` when no model can be fitted (too few evaluated rows, a constant
    target, no varying feature): the caller then picks by coverage alone.

    Features and rows are chosen as ``gradprune analyze`` chooses them (column roles, rows with every
    feature), and the model is the best registered predictor by cross-validated R².
    """
    from gradprune.analysis.columns import assign_roles
    from gradprune.analysis.pipeline import model_inputs
    from gradprune.analysis.prediction_model import build_model
    from gradprune.analysis.selection import compare_predictors

    if target not in evaluated.columns or not features:
        return None, {"error": f"no evaluated {target!r} or no gradient-statistic columns"}
    data = evaluated[[target, *features]].apply(pd.to_numeric, errors="coerce")
    data = data[data[target].notna()].reset_index(drop=True)
    try:
        roles = assign_roles(data, target, "screening")
        X, y, _, _ = model_inputs(roles, "screening")
        model = build_model(target, compare_predictors(X, y, None, seed), X, None, "screening")
    except GradpruneError as exc:
        return None, {"error": str(exc), "n": len(data)}
    if not model.features:  # the mean predicts as well as any feature: it ranks nothing
        return None, {"error": "the best cross-validated predictor uses no feature", "n": model.n}
    Xs = screened.reindex(columns=model.features).apply(pd.to_numeric, errors="coerce").astype(float)
    missing = Xs.isna().any(axis=1).to_numpy()
    pred = model.predict(Xs.fillna(0.0)) if len(Xs) else np.empty(0)
    pred = np.where(missing, np.nan, pred)
    return pred, {"predictor": model.predictor, "features": model.features, "formula": model.formula,
                  "n": model.n, "r2_cv": model.metrics.r2_cv, "mae_cv": model.metrics.mae_cv,
                  "baseline_r2_cv": model.metrics.baseline_r2_cv}
