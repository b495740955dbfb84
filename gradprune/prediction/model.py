"""``prediction_model.json``: the exported predictor as plain, versioned JSON, and applying it to new rows."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from gradprune.errors import GradpruneError
from gradprune.prediction.predictors import IsotonicFit, LinearFit
from gradprune.prediction.selection import Comparison, RoleScore
from gradprune.registry import format_validation_error

FORMAT = "gradprune.prediction_model"
FORMAT_VERSION = 1
LINEAR_PREDICTORS = ("ols", "ridge", "single_feature")  # the built-ins whose fit is linear


class _Strict(BaseModel):
    # NaN / ±inf in a number (JSON's NaN, or an edit) would make every prediction NaN: refused by name
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


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

    @model_validator(mode="after")
    def _consistent(self) -> PredictionModel:
        """The fields that describe the fit agree with each other (an edit of one of them alone is refused,
        naming it, rather than predicting with the other); :func:`load_model` checks ``predictor`` too."""
        feats = list(self.features)
        if len(set(feats)) != len(feats):
            raise ValueError(f"features: a name repeats ({feats})")
        for name in ("training_ranges", "coefficients", "standardized_coefficients"):
            _same_names(name, getattr(self, name), feats if name == "training_ranges" or self.isotonic is None
                        else [])
        for name, r in self.training_ranges.items():
            if r.min > r.max:
                raise ValueError(f"training_ranges.{name}: min {r.min} is above max {r.max}")
        if self.isotonic is not None:
            _check_isotonic(self.isotonic, feats, self.predictor)
            mean = float(np.mean(self.isotonic.y))  # what build_model records; an isotonic model does not use it
            for name in ("intercept", "standardized_intercept"):
                if not _close(getattr(self, name), mean):
                    raise ValueError(f"{name}: {getattr(self, name):.6g} is not the mean of isotonic.y ({mean:.6g}); "
                                     "an isotonic model predicts from its thresholds: edit isotonic.x / isotonic.y")
            return self
        if self.predictor == "isotonic":
            raise ValueError("predictor: 'isotonic' needs its thresholds in the field isotonic, which is missing")
        _same_names("standardisation.means", self.standardisation.means, feats)
        _same_names("standardisation.scales", self.standardisation.scales, feats)
        for f in feats:
            if self.standardisation.scales[f] <= 0:
                raise ValueError(f"standardisation.scales.{f}: {self.standardisation.scales[f]} is not a spread; "
                                 "expected a value > 0 (the standard deviation of the feature in training)")
        fit = self.linear_fit()
        for f, c in fit.raw_coefficients().items():
            if not _close(self.coefficients[f], c):
                raise ValueError(f"coefficients.{f}: {self.coefficients[f]:.6g} disagrees with "
                                 f"standardized_coefficients.{f} / standardisation.scales.{f} ({c:.6g}); the model "
                                 "was edited in one place only: edit both consistently, or re-run gradprune analyze")
        if not _close(self.intercept, fit.raw_intercept()):
            raise ValueError(f"intercept: {self.intercept:.6g} disagrees with standardized_intercept and the "
                             f"standardisation ({fit.raw_intercept():.6g}); the model was edited in one place only: "
                             "edit both consistently, or re-run gradprune analyze")
        return self

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


def _same_names(field_name: str, values: dict, features: list[str]) -> None:
    missing = [f for f in features if f not in values]
    extra = [k for k in values if k not in features]
    if missing or extra:
        parts = ([f"lacks {', '.join(missing)}"] if missing else []) + ([f"has {', '.join(extra)}"] if extra else [])
        raise ValueError(f"{field_name}: {' and '.join(parts)}; expected one entry per feature "
                         f"({', '.join(features) or 'none'})")


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)


def _check_isotonic(iso: Isotonic, feats: list[str], predictor: str) -> None:
    if feats != [iso.feature]:
        raise ValueError(f"isotonic.feature: {iso.feature!r} is not the model's one feature ({feats})")
    if len(iso.x) != len(iso.y) or not iso.x:
        raise ValueError(f"isotonic: x and y need the same number of thresholds, at least one (got {len(iso.x)} "
                         f"and {len(iso.y)})")
    if any(b < a for a, b in zip(iso.x, iso.x[1:], strict=False)):
        raise ValueError("isotonic.x: the thresholds must be in increasing order")
    steps = [b - a for a, b in zip(iso.y, iso.y[1:], strict=False)]
    if any(d < 0 for d in steps) if iso.increasing else any(d > 0 for d in steps):
        raise ValueError(f"isotonic.y: not {'increasing' if iso.increasing else 'decreasing'} as isotonic.increasing "
                         "says")
    if predictor in LINEAR_PREDICTORS:
        raise ValueError(f"isotonic: set, but predictor {predictor!r} fits a linear model")


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
        model = PredictionModel.model_validate(obj)
    except ValidationError as err:
        raise GradpruneError(f"{p}: invalid prediction model: {format_validation_error(err, '')}") from None
    _check_predictor(p, model)
    return model


def _check_predictor(path: Path, model: PredictionModel) -> None:
    """``predictor`` names a registered predictor and ``params`` fit it (they say how the fit was made)."""
    from gradprune.errors import PluginError
    from gradprune.plugins import PREDICTORS

    names = PREDICTORS.names()
    args = ", ".join(f"{k}={v}" for k, v in model.params.items())
    label = f"{model.predictor}({args})" if args else model.predictor  # as CandidateScore.label writes it
    chosen = model.candidates[0].get("predictor") if model.candidates else None
    if isinstance(chosen, str) and chosen != label and not chosen.startswith(f"{label} on "):
        raise GradpruneError(f"{path}: invalid prediction model: predictor {model.predictor!r} with params "
                             f"{model.params} is not the candidate the analysis exported ({chosen!r}, candidates[0]); "
                             "the coefficients are that candidate's fit: restore predictor/params, or re-run "
                             "gradprune analyze")
    if model.predictor not in names:
        raise GradpruneError(f"{path}: invalid prediction model: predictor {model.predictor!r} is not a registered "
                             f"predictor (known: {', '.join(names)})")
    try:
        PREDICTORS.build(model.predictor, model.params, "params")
    except PluginError as exc:
        raise GradpruneError(f"{path}: invalid prediction model: {exc}") from None


def stated_formula(model: PredictionModel) -> str:
    """The formula the model's numbers give (what :meth:`PredictionModel.predict` applies)."""
    if model.isotonic is not None:
        iso = model.isotonic
        return formula(model.target, IsotonicFit((iso.feature,), tuple(iso.x), tuple(iso.y), iso.increasing))
    return formula(model.target, model.linear_fit())
