"""Predictor screening (``evaluation: screen``): evaluate a few trials, predict the rest, evaluate the best.

The search runs in two phases over the same trial queue:

1. Every grid point is claimed once. ``screen.n_initial`` points spread over the grid (farthest-first,
   :func:`initial_design`) are *initial*: calibrated, pruned and fully
   evaluated; workers claim them first. Every other point is *screened*: calibrated and pruned only
   (``eval.run=none``), which gives its gradient statistics.
2. When no phase-1 trial is waiting or running, one worker (under the search's file lock) fits the
   prediction model of :mod:`gradprune.prediction` (as ``gradprune analyze`` does: every registered predictor, leave-one-out, the best by
   cross-validated R²) of the objective on the gradient statistics of the evaluated trials, predicts
   every screened trial, and enqueues the ``top_k`` predicted best plus ``coverage`` more, farthest in
   the (standardised) gradient-statistic space from every trial evaluated or picked. Those are run
   again in full (their calibration comes from the cache) and all workers share them.

With several workers a worker that finds the queue empty while phase-1 trials still run elsewhere
waits for them (polling, with the usual stale-trial recovery), since the selection needs them all;
this idles at most the length of the slowest phase-1 trial. The selection is stored in the study
(``gradprune_screen``), so a resumed search or another worker sees the same one, and a trial's role
follows from its point and that record alone (a re-enqueued trial keeps its role).

Farthest-first (greedy maximin) choices are made twice: which grid points are evaluated first (spread
over the grid, before any calibration) and which screened points are evaluated "for coverage"
(farthest from every evaluated point in the space of gradient statistics), so the prediction model is
checked where it extrapolates most.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import numpy as np

from gradprune.errors import GradpruneError
from gradprune.search.optuna_store import set_study_system_attr, study_system_attrs
from gradprune.search.study import claim_waiting, file_lock, point_key, trial_params, wait_until_idle

SELECTION_ATTR = "gradprune_screen"
EVALUATED_ROLES = ("top_k", "coverage")


def _stored_key(trial) -> str:
    return json.dumps(trial_params(trial), sort_keys=True)


# spreading points over a space

def grid_points(space: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """Every point of the space in the order the search enqueues them (itertools.product)."""
    keys = list(space)
    return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*space.values())]


def grid_coordinates(space: dict[str, list[Any]]) -> np.ndarray:
    """Each grid point as its values' positions in their lists, scaled to [0, 1] per key (a list of
    numbers is taken in its given order, which is how grids are written: small to large)."""
    spans = [max(len(v) - 1, 1) for v in space.values()]
    idx = itertools.product(*(range(len(v)) for v in space.values()))
    return np.array([[i / s for i, s in zip(combo, spans, strict=True)] for combo in idx], dtype=float).reshape(
        -1, len(space))


def farthest_first(X: np.ndarray, chosen: list[int], candidates: list[int], k: int) -> list[int]:
    """Greedily pick ``k`` of ``candidates``, each the one farthest (Euclidean) from all points chosen so
    far; ties go to the earlier candidate. With nothing chosen yet the first candidate starts."""
    picked: list[int] = []
    pool = list(candidates)
    have = list(chosen)
    while pool and len(picked) < k:
        if have:
            dist = np.min(np.linalg.norm(X[pool][:, None, :] - X[have][None, :, :], axis=2), axis=1)
            j = int(np.argmax(dist))  # first maximum: the earlier candidate on ties
        else:
            j = 0
        picked.append(pool.pop(j))
        have.append(picked[-1])
    return picked


def initial_design(space: dict[str, list[Any]], n: int) -> list[int]:
    """Indices (grid order) of ``n`` points spread over the grid, starting from its first point."""
    X = grid_coordinates(space)
    return sorted(farthest_first(X, [], list(range(len(X))), n))


def standardised(frame, columns: list[str]) -> np.ndarray:
    """Z-scores of ``columns`` of a DataFrame; a missing value sits at its column's mean, a constant
    column contributes nothing."""
    values = frame[columns].apply(lambda c: c.astype(float)).to_numpy(float)
    means = np.nanmean(values, axis=0) if len(values) else np.zeros(len(columns))
    sds = np.nanstd(values, axis=0) if len(values) else np.ones(len(columns))
    z = (values - means) / np.where(sds > 0, sds, 1.0)
    return np.nan_to_num(z, nan=0.0)


class Screening:
    """The screening state of one study: which points are initial, the selection once made."""

    POLL_S = 5.0

    def __init__(self, spec, study, space: dict[str, list[Any]], out: Path) -> None:
        self.spec, self.study, self.space, self.out = spec, study, space, out
        points = grid_points(space)
        self.initial = {point_key(points[i]) for i in initial_design(space, spec.screen.n_initial)}

    def selection(self) -> dict[str, Any] | None:
        """The stored selection, or None before phase 2."""
        attrs = study_system_attrs(self.study)
        return attrs.get(SELECTION_ATTR)

    def added_trials(self) -> int:
        """Trials enqueued beyond the grid: phase 2's picks."""
        sel = self.selection()
        return len(sel["selected"]) if sel else 0

    def role(self, point: dict[str, Any]) -> str:
        """``initial``, ``screened``, or (phase 2) ``top_k`` / ``coverage``."""
        key = point_key(point)
        if key in self.initial:
            return "initial"
        sel = self.selection()
        return sel["selected"].get(key, "screened") if sel else "screened"

    def claim(self) -> int | None:
        """Claim a WAITING trial, initial points first (the model can be fitted sooner)."""
        return claim_waiting(self.study, order=lambda t: (_stored_key(t) not in self.initial, t.number))

    def next_phase(self) -> bool:
        """Called when the queue is empty: wait for phase 1 to end, then make the selection once.
        True when there may be trials to claim again."""
        if self.selection() is not None:
            return False  # phase 2 trials were enqueued once; what is left is being claimed
        if wait_until_idle(self.study, self.POLL_S):
            return True
        with file_lock(self.out / ".search.lock"):
            if self.selection() is not None:
                return False
            sel = self.select()
            set_study_system_attr(self.study, SELECTION_ATTR, sel)
            for key in sel["selected"]:
                self.study.enqueue_trial(json.loads(key))
        from gradprune.files import atomic_write_json

        atomic_write_json(self.out / "screen_selection.json", sel)
        return True

    def phase1_rows(self):
        """One row per finished, successful phase-1 trial: key, role, trial number and its metrics."""
        import pandas as pd

        rows = []
        for t in self.study.get_trials(deepcopy=False):
            role = t.user_attrs.get("extra", {}).get("screen_role")
            if t.state.is_finished() and t.user_attrs.get("success") and role in ("initial", "screened"):
                rows.append({"key": _stored_key(t), "role": role, "trial": t.number, **t.user_attrs["metrics"]})
        return pd.DataFrame(rows)

    def features(self, rows) -> list[str]:
        """The gradient-statistic columns (``<collector>_*``) that hold a number in some row."""
        collectors = self.spec.base_recipe_dict().get("stats", {}).get("collectors") or []
        return [c for c in rows.columns if any(c.startswith(f"{n}_") for n in collectors)
                and rows[c].apply(lambda v: isinstance(v, int | float) and v == v).any()]

    def select(self) -> dict[str, Any]:
        """Fit, predict and pick (see the module docstring); a JSON-able record of all of it."""
        rows = self.phase1_rows()
        target, cfg = self.spec.objective, self.spec.screen
        if rows.empty:
            return {"initial": [], "predicted": {}, "selected": {}, "model": {"error": "no successful trial"}}
        feats = self.features(rows)
        done = rows[rows.role == "initial"].reset_index(drop=True)
        cand = rows[rows.role == "screened"].reset_index(drop=True)
        pred, model = fit_and_predict(done, cand, feats, target, self.spec.seed)
        ok = np.isfinite(pred) if pred is not None else np.zeros(len(cand), dtype=bool)
        # best predicted first; unpredictable trials last; ties in trial order
        order = sorted(range(len(cand)), key=lambda i: (not ok[i], -pred[i] if ok[i] else 0.0, cand.trial[i]))
        top = [i for i in order if ok[i]][: cfg.top_k]  # without a model every pick is made for coverage
        pos = {k: j for j, k in enumerate(rows.key)}
        have = [pos[k] for k in done.key] + [pos[cand.key[i]] for i in top]
        rest = [pos[cand.key[i]] for i in order if i not in top]
        Z = standardised(rows, feats) if feats else np.zeros((len(rows), 0))
        cover = farthest_first(Z, have, rest, cfg.coverage + cfg.top_k - len(top))
        selected = {cand.key[i]: "top_k" for i in top} | {rows.key[j]: "coverage" for j in cover}
        predicted = {cand.key[i]: float(pred[i]) for i in range(len(cand)) if ok[i]}
        return {"target": target, "features": feats, "model": model, "initial": sorted(done.key),
                "predicted": predicted, "selected": selected}


# the prediction model, fitted on the trials evaluated so far and applied to the screened ones

def fit_and_predict(evaluated, screened, features: list[str], target: str,
                    seed: int) -> tuple[np.ndarray | None, dict[str, Any]]:
    """Predicted ``target`` of every screened row (NaN where a feature is missing) and a description of
    the model; ``(None, {"error": ...})`` when no model can be fitted (too few evaluated rows, a constant
    target, no varying feature): the caller then picks by coverage alone.

    Features and rows are chosen as ``gradprune analyze`` chooses them (column roles, rows with every
    feature), and the model is the best registered predictor by cross-validated R².
    """
    import pandas as pd

    from gradprune.prediction.columns import assign_roles, model_inputs
    from gradprune.prediction.model import build_model
    from gradprune.prediction.selection import compare_predictors

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


def screen_rows(study, spec, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """CSV rows of a screening search: ``<objective>_predicted`` on every predicted trial, and the
    screened row of a point that was evaluated in phase 2 dropped (its evaluated row carries the
    prediction), so each trial unit has one row."""
    sel = study_system_attrs(study).get(SELECTION_ATTR) or {}
    predicted, selected = sel.get("predicted", {}), sel.get("selected", {})
    keys = {t.number: _stored_key(t) for t in study.get_trials(deepcopy=False)}
    evaluated_again = {keys[r["trial"]] for r in rows if r.get("screen_role") in EVALUATED_ROLES}
    out = []
    for r in rows:
        key = keys.get(r["trial"])
        if r.get("screen_role") == "screened" and key in evaluated_again and key in selected:
            continue
        if key in predicted:
            r[f"{spec.objective}_predicted"] = predicted[key]
        out.append(r)
    return out
