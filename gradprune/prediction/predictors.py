"""Accuracy predictors: linear models of the target on standardised features (registry ``predictors``).

Each plugin chooses its own features from the columns it is given — inside every cross-validation
fold too, so the cross-validated score covers the selection — never more than ``max_features``, and
returns a :class:`LinearFit`, which is exported as plain JSON (no pickle).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from gradprune.errors import GradpruneError
from gradprune.registry import NoParams


@dataclass(frozen=True)
class LinearFit:
    """y ≈ intercept + Σ coef_i · (x_i − mean_i) / scale_i, over ``features`` (possibly none)."""

    features: tuple[str, ...]
    coefs: tuple[float, ...]  # per standardised feature
    intercept: float  # the prediction at the training means
    means: tuple[float, ...]
    scales: tuple[float, ...]

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        """Predictions for the rows of ``X`` (which must hold every feature)."""
        if not self.features:
            return np.full(len(X), self.intercept)
        # one Series per feature: much cheaper than a sub-DataFrame, which matters inside cross-validation
        values = np.column_stack([X[f].to_numpy(float) for f in self.features])
        z = (values - np.array(self.means)) / np.array(self.scales)
        return self.intercept + z @ np.array(self.coefs)

    def raw_coefficients(self) -> dict[str, float]:
        """Coefficients per original unit of each feature."""
        return {f: c / s for f, c, s in zip(self.features, self.coefs, self.scales, strict=True)}

    def raw_intercept(self) -> float:
        """Intercept of the model in original units."""
        return self.intercept - sum(c * m / s for c, m, s in zip(self.coefs, self.means, self.scales, strict=True))


def _zscores(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    means, scales = values.mean(axis=0), values.std(axis=0)
    keep = scales > 1e-12 * np.maximum(1.0, np.abs(means))
    return (values[:, keep] - means[keep]) / scales[keep], keep, means[keep], scales[keep]


def standardise(X: pd.DataFrame) -> tuple[np.ndarray, list[str], np.ndarray, np.ndarray]:
    """Z-scores of the columns that vary (a column constant in a training fold carries no information)."""
    z, keep, means, scales = _zscores(X.to_numpy(float))
    return z, [c for c, k in zip(X.columns, keep, strict=True) if k], means, scales


def _fit(names: list[str], chosen: list[int], coefs: np.ndarray, intercept: float,
         means: np.ndarray, scales: np.ndarray) -> LinearFit:
    return LinearFit(tuple(names[i] for i in chosen), tuple(float(c) for c in coefs), float(intercept),
                     tuple(float(means[i]) for i in chosen), tuple(float(scales[i]) for i in chosen))


class Predictor:
    """Base class of predictors: ``fit`` returns a LinearFit on at most ``max_features`` features."""

    Params: ClassVar[type[BaseModel]] = NoParams

    def __init__(self, params: BaseModel | None = None) -> None:
        self.params = params if params is not None else self.Params()

    def fit(self, X: pd.DataFrame, y: np.ndarray, max_features: int) -> LinearFit:
        """Choose features of ``X`` and fit the target ``y``."""
        raise NotImplementedError


def forward_selection(z: np.ndarray, y: np.ndarray, cap: int, penalty: float) -> list[int]:
    """Greedy forward selection of columns of centred ``z``: add the column that lowers the residual sum of
    squares most while the information criterion n·log(RSS/n) + penalty·k improves, up to ``cap`` columns.

    The candidates are kept orthogonal to the chosen columns (Gram–Schmidt), so the RSS drop of every
    candidate is one dot product: (r·q)² / (q·q).
    """
    n = len(y)
    resid = y - y.mean()
    q = z.copy()
    rss = float(resid @ resid)
    tiny = 1e-300  # an exact fit must not take log(0)

    def crit(value: float, k: int) -> float:
        return n * np.log(max(value, tiny) / n) + penalty * k

    chosen: list[int] = []
    best = crit(rss, 0)
    while len(chosen) < min(cap, z.shape[1]):
        norms = np.einsum("ij,ij->j", q, q)
        usable = norms > 1e-10 * n  # collinear with the chosen columns: nothing new to add
        usable[chosen] = False
        if not usable.any():
            break
        gains = np.where(usable, (resid @ q) ** 2 / np.where(usable, norms, 1.0), -1.0)
        j = int(np.argmax(gains))
        score = crit(rss - gains[j], len(chosen) + 1)
        if score >= best:
            break
        chosen.append(j)
        best, rss = score, rss - gains[j]
        unit = q[:, j] / np.sqrt(norms[j])
        resid = resid - (resid @ unit) * unit
        q = q - np.outer(unit, unit @ q)
    return chosen


class OLSPredictor(Predictor):
    """Ordinary least squares on features chosen by forward selection (BIC by default), at most n/4."""

    class Params(BaseModel):
        """Params of the OLS predictor."""

        model_config = ConfigDict(extra="forbid", frozen=True)
        max_features: int | None = Field(None, ge=1, description="cap below n/4 (default: n/4)")
        criterion: Literal["bic", "aic"] = "bic"

    def fit(self, X: pd.DataFrame, y: np.ndarray, max_features: int) -> LinearFit:
        """Forward selection, then least squares (LAPACK, via numpy.linalg.lstsq) on the chosen standardised
        features; the columns of z are centred, so the intercept is the mean of ``y``."""
        z, names, means, scales = standardise(X)
        cap = min(max_features, self.params.max_features or max_features)
        penalty = np.log(len(y)) if self.params.criterion == "bic" else 2.0
        chosen = forward_selection(z, y, cap, penalty)
        if not chosen:
            return LinearFit((), (), float(np.mean(y)), (), ())
        # sklearn's LinearRegression gives the same coefficients; its input checks cost 20× the solve, which
        # matters in the thousands of refits of the nested cross-validation and the permutation test
        coefs = np.linalg.lstsq(z[:, chosen], y - y.mean(), rcond=None)[0]
        return _fit(names, chosen, coefs, float(np.mean(y)), means, scales)


class RidgePredictor(Predictor):
    """Ridge on the n/4 features most correlated with the target; penalty by sklearn's fast leave-one-out."""

    class Params(BaseModel):
        """Params of the ridge predictor."""

        model_config = ConfigDict(extra="forbid", frozen=True)
        alphas: tuple[float, ...] = Field(tuple(float(a) for a in np.logspace(-3, 3, 7)), min_length=1)
        max_features: int | None = Field(None, ge=1, description="cap below n/4 (default: n/4)")

    def fit(self, X: pd.DataFrame, y: np.ndarray, max_features: int) -> LinearFit:
        """Keep the features with the largest |Pearson r| with ``y``, then sklearn's RidgeCV."""
        from sklearn.linear_model import RidgeCV

        z, names, means, scales = standardise(X)
        if not names:
            return LinearFit((), (), float(np.mean(y)), (), ())
        cap = min(max_features, self.params.max_features or max_features)
        r = np.abs(z.T @ (y - y.mean()))  # ∝ |Pearson r|: the columns of z share one scale
        chosen = sorted(np.argsort(-r, kind="stable")[:cap].tolist())
        model = RidgeCV(alphas=self.params.alphas).fit(z[:, chosen], y)
        return _fit(names, chosen, model.coef_, model.intercept_, means, scales)


class SingleFeaturePredictor(Predictor):
    """A straight line on one feature (the named one, or the one most correlated with the target)."""

    class Params(BaseModel):
        """Params of the one-feature predictor."""

        model_config = ConfigDict(extra="forbid", frozen=True)
        feature: str | None = Field(None, description="column to use (default: the most correlated)")

    def fit(self, X: pd.DataFrame, y: np.ndarray, max_features: int) -> LinearFit:
        """Least-squares line on the standardised feature (closed form: slope = Σ z·(y − ȳ) / n)."""
        feature = self.params.feature
        if feature is not None and feature not in X.columns:
            raise GradpruneError(f"predictor single_feature: no feature column {feature!r} among {list(X.columns)}")
        if feature is None:
            z, names, means, scales = standardise(X)
        else:  # one Series, not a sub-DataFrame: this runs once per cross-validation fold
            z, keep, means, scales = _zscores(X[feature].to_numpy(float)[:, None])
            names = [feature] if keep[0] else []
        yc = y - y.mean()
        if not names:  # the feature is constant here: the best line is flat
            return LinearFit((), (), float(np.mean(y)), (), ())
        j = int(np.argmax(np.abs(z.T @ yc)))
        slope = float(z[:, j] @ yc) / len(y)  # z has unit variance, so Σz² = n
        return _fit(names, [j], np.array([slope]), float(np.mean(y)), means, scales)


@dataclass(frozen=True)
class IsotonicFit:
    """y ≈ a monotone, piecewise-linear function of one feature through sklearn IsotonicRegression's
    thresholds; constant beyond the training range (``out_of_bounds="clip"``)."""

    features: tuple[str, ...]  # exactly one
    x: tuple[float, ...]  # X_thresholds_
    y: tuple[float, ...]  # y_thresholds_
    increasing: bool

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        """Predictions for the rows of ``X`` (linear interpolation between thresholds, as sklearn's)."""
        return np.interp(X[self.features[0]].to_numpy(float), self.x, self.y)


class IsotonicPredictor(Predictor):
    """A monotone (not necessarily straight) function of the feature with the largest |Spearman ρ|:
    for relations such as ρ = −0.92 with Pearson r = −0.77, which a line understates."""

    def fit(self, X: pd.DataFrame, y: np.ndarray, max_features: int) -> LinearFit | IsotonicFit:
        """Isotonic regression (scipy's pool-adjacent-violators) on the feature ranked most monotonically
        with ``y``, its direction the sign of that Spearman coefficient; tied values of the feature are
        pooled first (their mean, weighted by their count), as sklearn's IsotonicRegression does, so the
        fit equals sklearn's (a test checks it) without its input checks in every refit."""
        from scipy.optimize import isotonic_regression
        from scipy.stats import rankdata

        z, names, _, _ = standardise(X)
        if not names:
            return LinearFit((), (), float(np.mean(y)), (), ())
        ranks = rankdata(z, axis=0)
        ranks = (ranks - ranks.mean(axis=0)) / ranks.std(axis=0)
        ry = rankdata(y)
        rho = ranks.T @ (ry - ry.mean()) / (len(y) * ry.std()) if ry.std() > 0 else np.zeros(len(names))
        j = int(np.argmax(np.abs(rho)))
        x = X[names[j]].to_numpy(float)
        increasing = bool(rho[j] >= 0)
        levels, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
        means = np.bincount(inverse, weights=y) / counts
        fitted = isotonic_regression(means, weights=counts.astype(float), increasing=increasing).x
        return IsotonicFit((names[j],), tuple(map(float, levels)), tuple(map(float, fitted)), increasing)
