"""``prediction_model.json``: the exported predictor as plain, versioned JSON, and applying it to new rows."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, ValidationError

from gradprune.errors import GradpruneError
from gradprune.prediction.predictors import IsotonicFit, LinearFit
from gradprune.prediction.selection import Comparison, RoleScore
from gradprune.registry import format_validation_error

FORMAT = "gradprune.prediction_model"
FORMAT_VERSION = 1


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Range(_Strict):
    """The values of a feature seen in training."""

    min: float
    max: float


class Standardisation(_Strict):
    """Per-feature means and scales (population sd) the standardised coefficients refer to."""

    means: dict[str, float]
    scales: dict[str, float]


class Isotonic(_Strict):
    """A monotone piecewise-linear function of one feature: interpolation between (x, y) thresholds, constant
    outside them."""

    feature: str
    x: list[float]
    y: list[float]
    increasing: bool


class Metrics(_Strict):
    """Scores of the exported predictor (``cv`` names the cross-validation scheme)."""

    r2_in_sample: float
    mae_in_sample: float
    r2_cv: float
    mae_cv: float
    cv: str
    baseline_r2_cv: float
    # the choice among candidates judged without optimism (absent in models written before these existed)
    r2_cv_nested: float | None = None
    mae_cv_nested: float | None = None
    permutation_p: float | None = None
    permutations: int | None = None
    feature_set: str | None = None
    candidates_compared: int | None = None


class PredictionModel(_Strict):
    """A linear prediction of ``target``: intercept + Σ coefficients[f] · f (original units)."""

    format: Literal["gradprune.prediction_model"] = FORMAT
    format_version: Literal[1] = FORMAT_VERSION
    target: str
    predictor: str
    params: dict[str, Any]
    features: list[str]
    coefficients: dict[str, float]
    intercept: float
    standardized_coefficients: dict[str, float]
    standardized_intercept: float
    standardisation: Standardisation
    training_ranges: dict[str, Range]
    n: int
    n_configs: int | None = None
    metrics: Metrics
    formula: str
    source: str = ""
    candidates: list[dict[str, Any]] = []
    isotonic: Isotonic | None = None  # set for the isotonic predictor: then the coefficients are empty

    def linear_fit(self) -> LinearFit:
        """The model as a LinearFit (the standardised form, which is what was fitted)."""
        f = self.features
        return LinearFit(tuple(f), tuple(self.standardized_coefficients[x] for x in f), self.standardized_intercept,
                         tuple(self.standardisation.means[x] for x in f),
                         tuple(self.standardisation.scales[x] for x in f))

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        """Predicted target of each row of ``X`` (which must hold every feature)."""
        if self.isotonic is not None:
            iso = self.isotonic
            return IsotonicFit((iso.feature,), tuple(iso.x), tuple(iso.y), iso.increasing).predict(X)
        return self.linear_fit().predict(X)


def _number(v: float) -> str:
    return f"{abs(v):.4g}"


def formula(target: str, fit: LinearFit | IsotonicFit) -> str:
    """Human-readable formula in original units, e.g. ``acc_mean ≈ 0.72 − 0.004 × grad_norm_ratio``."""
    if isinstance(fit, IsotonicFit):
        way = "increasing" if fit.increasing else "decreasing"
        return (f"{target} ≈ {way} step-wise linear function of {fit.features[0]} ({len(fit.x)} thresholds, "
                f"from {_number(fit.y[0])} at {fit.x[0]:.4g} to {_number(fit.y[-1])} at {fit.x[-1]:.4g})")
    b0 = fit.raw_intercept()
    text = f"{target} ≈ {'−' if b0 < 0 else ''}{_number(b0)}"
    for f, c in fit.raw_coefficients().items():
        text += f" {'−' if c < 0 else '+'} {_number(c)} × {f}"
    return text


def build_model(target: str, comparison: Comparison, X: pd.DataFrame, n_configs: int | None,
                source: str, judged: RoleScore | None = None) -> PredictionModel:
    """The JSON model of the best candidate of ``comparison`` (fitted on ``X``); ``judged`` adds the
    nested cross-validated scores and the permutation p-value of that choice."""
    best = comparison.best
    fit = best.fit
    feats = list(fit.features)
    iso = None
    if isinstance(fit, IsotonicFit):  # no coefficients: the thresholds are the model
        iso = Isotonic(feature=feats[0], x=list(fit.x), y=list(fit.y), increasing=fit.increasing)
        fit = LinearFit((), (), float(np.mean(fit.y)), (), ())
    return PredictionModel(
        target=target, predictor=best.name, params=best.params, features=feats,
        coefficients=fit.raw_coefficients(), intercept=fit.raw_intercept(),
        standardized_coefficients=dict(zip(fit.features, fit.coefs, strict=True)),
        standardized_intercept=fit.intercept,
        standardisation=Standardisation(means=dict(zip(fit.features, fit.means, strict=True)),
                                        scales=dict(zip(fit.features, fit.scales, strict=True))),
        training_ranges={f: Range(min=float(X[f].min()), max=float(X[f].max())) for f in feats},
        n=len(X), n_configs=n_configs,
        metrics=Metrics(r2_in_sample=best.r2, mae_in_sample=best.mae, r2_cv=best.r2_cv, mae_cv=best.mae_cv,
                        cv=comparison.scheme.name, baseline_r2_cv=comparison.baseline_r2_cv,
                        **({} if judged is None else {
                            "r2_cv_nested": judged.r2_cv_nested, "mae_cv_nested": judged.mae_cv_nested,
                            "permutation_p": judged.p_value, "permutations": judged.permutations,
                            "feature_set": best.feature_set, "candidates_compared": len(comparison.scores)})),
        formula=formula(target, best.fit), source=source, isotonic=iso,
        candidates=[{"predictor": s.label, "feature_set": s.feature_set, "features": list(s.fit.features),
                     "r2_in_sample": s.r2,
                     "r2_cv": s.r2_cv, "mae_cv": s.mae_cv} for s in comparison.scores],
    )


def load_model(path: str | Path) -> PredictionModel:
    """Read a prediction_model.json; anything else raises a GradpruneError that says what is expected."""
    p = Path(path)
    expected = f"expected a prediction_model.json written by gradprune analyze (format {FORMAT!r})"
    if not p.is_file():
        raise GradpruneError(f"{p}: {'is a directory' if p.is_dir() else 'file not found'} ({expected})")
    try:
        obj = json.loads(p.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise GradpruneError(f"{p}: not JSON ({exc}); {expected}") from None
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise GradpruneError(f"{p}: not a gradprune prediction model; {expected}")
    if obj.get("format_version") != FORMAT_VERSION:
        raise GradpruneError(
            f"{p}: prediction model format_version {obj.get('format_version')!r}, but this gradprune reads "
            f"version {FORMAT_VERSION}; re-run gradprune analyze with this version to rebuild it"
        )
    try:
        return PredictionModel.model_validate(obj)
    except ValidationError as err:
        raise GradpruneError(f"{p}: invalid prediction model: {format_validation_error(err, '')}") from None
