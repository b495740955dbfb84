"""Predictor screening (``evaluation: screen``): evaluate a few trials, predict the rest, evaluate the best.

The search runs in two phases over the same trial queue:

1. Every grid point is claimed once. ``screen.n_initial`` points spread over the grid (farthest-first,
   :func:`gradprune.search.coverage.initial_design`) are *initial*: calibrated, pruned and fully
   evaluated; workers claim them first. Every other point is *screened*: calibrated and pruned only
   (``eval.run=none``), which gives its gradient statistics.
2. When no phase-1 trial is waiting or running, one worker (under the search's file lock) fits the
   analysis module's prediction model (every registered predictor, leave-one-out, the best by
   cross-validated R²) of the objective on the gradient statistics of the evaluated trials, predicts
   every screened trial, and enqueues the ``top_k`` predicted best plus ``coverage`` more, farthest in
   the (standardised) gradient-statistic space from every trial evaluated or picked. Those are run
   again in full (their calibration comes from the cache) and all workers share them.

With several workers a worker that finds the queue empty while phase-1 trials still run elsewhere
waits for them (polling, with the usual stale-trial recovery), since the selection needs them all;
this idles at most the length of the slowest phase-1 trial. The selection is stored in the study
(``gradprune_screen``), so a resumed search or another worker sees the same one, and a trial's role
follows from its point and that record alone (a re-enqueued trial keeps its role).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from gradprune.search.coverage import farthest_first, grid_points, initial_design, standardised
from gradprune.search.optuna_store import set_study_system_attr, study_system_attrs
from gradprune.search.study import claim_waiting, file_lock, point_key, trial_params, wait_until_idle

SELECTION_ATTR = "gradprune_screen"
EVALUATED_ROLES = ("top_k", "coverage")


def _stored_key(trial) -> str:
    return json.dumps(trial_params(trial), sort_keys=True)


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
        import numpy as np

        from gradprune.search.screen_model import fit_and_predict

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
