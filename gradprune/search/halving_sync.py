"""Synchronous successive halving (``halving.schedule: sync``, the default for grid searches).

Every grid point is enqueued at rung 0. A trial evaluates its point up to one rung — the pruned model
is rebuilt from the calibration cache, the point's per-example results of earlier rungs are read back
(:class:`PointExamples`), only the rung's new examples are scored — and ends ``paused`` (Optuna state
PRUNED). When no trial is waiting or running, one worker (under the search's file lock) decides the
lowest undecided rung over every point that finished it (:func:`gradprune.search.rungs.promoted`: the
best ⌊n/η⌋ and every point within ``k_stderr`` standard errors of them) and enqueues the promoted
points at the next rung. The decision depends on the points' values only, never on the order the
trials ran in (asynchronous halving decides each trial against those seen so far). Decisions are
stored in the study (``gradprune_halving``), so a resumed search or another worker sees the same ones.

A point costs one model load and surgery per rung it reaches (a few seconds on a 7B model against
minutes of evaluation per rung); every example is still scored once.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from pathlib import Path
from typing import Any

from gradprune.io import atomic_write_json
from gradprune.search.rungs import PerExample, promoted
from gradprune.search.study import claim_waiting, file_lock, point_key, recover_stale, trial_params

RUNG_ATTR = "halving_rung"  # user attr given at enqueue: the rung a trial evaluates up to
DECISIONS_ATTR = "gradprune_halving"  # study system attr: rung → the decision record


class PointExamples:
    """Per grid point, its per-example results and rung records so far (``cache/examples/<hash>.json``)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, key: str) -> Path:
        return self.root / f"{hashlib.sha256(key.encode()).hexdigest()[:20]}.json"

    def load(self, key: str) -> tuple[PerExample, list[dict[str, Any]], dict[str, Any]]:
        """The point's per-example results (task → index → metric → value), rung records, and what is
        evaluated once per point (perplexity: ``{"metrics", "info"}``; empty before the first trial)."""
        p = self.path(key)
        if not p.exists():
            return {}, [], {}
        data = json.loads(p.read_text())
        per_example = {t: {int(i): m for i, m in rows.items()} for t, rows in data["per_example"].items()}
        return per_example, data["rungs"], data["once"]

    def save(self, key: str, per_example: PerExample, rungs: list[dict[str, Any]], once: dict[str, Any]) -> None:
        atomic_write_json(self.path(key), {"point": key, "rungs": rungs, "once": once, "per_example": per_example})


def trial_rung(trial) -> int:
    """The rung a trial evaluates up to (0 for a grid point's first trial)."""
    return int(trial.user_attrs.get(RUNG_ATTR, 0))


class SyncHalving:
    """The synchronous halving state of one study: claims lowest rung first, decides at each barrier."""

    POLL_S = 5.0

    def __init__(self, spec, study, out: Path, n_rungs: int) -> None:
        self.spec, self.study, self.out, self.n_rungs = spec, study, out, n_rungs
        self.examples = PointExamples(out / "cache" / "examples")

    def decisions(self) -> dict[str, Any]:
        """rung (as text) → {promoted, values, stderrs} for every rung decided so far."""
        return self.study._storage.get_study_system_attrs(self.study._study_id).get(DECISIONS_ATTR) or {}

    def added_trials(self) -> int:
        """Trials enqueued beyond the grid: one per promotion."""
        return sum(len(d["promoted"]) for d in self.decisions().values())

    def claim(self) -> int | None:
        """Claim a WAITING trial, lowest rung first."""
        return claim_waiting(self.study, order=lambda t: (trial_rung(t), t.number))

    def latest(self) -> dict[str, Any]:
        """Per point, its latest finished trial (retried ones not counted)."""
        out: dict[str, Any] = {}
        for t in sorted(self.study.get_trials(deepcopy=False), key=lambda t: t.number):
            if t.state.is_finished() and not t.user_attrs.get("retried"):
                out[point_key(trial_params(t))] = t
        return out

    def next_phase(self) -> bool:
        """Called when the queue is empty: wait for running trials, then decide the lowest undecided
        rung and enqueue its promoted points. True when there may be trials to claim again."""
        from optuna.trial import TrialState

        while True:
            recover_stale(self.study)
            states = {t.state for t in self.study.get_trials(deepcopy=False) if not t.user_attrs.get("retried")}
            if TrialState.WAITING in states:
                return True
            if TrialState.RUNNING not in states:
                break
            time.sleep(self.POLL_S)
        with file_lock(self.out / ".search.lock"):
            decisions = self.decisions()
            waiting = self.study.get_trials(deepcopy=False, states=(TrialState.WAITING, TrialState.RUNNING))
            if waiting:
                return True  # another worker decided meanwhile
            rung, values, stderrs = self.undecided(decisions)
            if rung is None:
                return False
            keep = promoted(values, stderrs, self.spec.halving.reduction_factor, self.spec.halving.k_stderr)
            decisions[str(rung)] = {"promoted": sorted(keep), "values": values, "stderrs": stderrs}
            self.study._storage.set_study_system_attr(self.study._study_id, DECISIONS_ATTR, decisions)
            for key in sorted(keep):
                self.study.enqueue_trial(json.loads(key), user_attrs={RUNG_ATTR: rung + 1})
        atomic_write_json(self.out / "halving_decisions.json", decisions)
        return True

    def undecided(self, decisions: dict[str, Any]) -> tuple[int | None, dict[str, float], dict[str, float]]:
        """The lowest rung below the last that some point finished and no decision covers yet, with
        the value and decision stderr of every point that finished it."""
        by_rung: dict[int, tuple[dict[str, float], dict[str, float]]] = {}
        for key, t in self.latest().items():
            r = trial_rung(t)
            if r >= self.n_rungs - 1 or str(r) in decisions or not t.user_attrs.get("success"):
                continue
            rec = next((x for x in self.examples.load(key)[1] if x["rung"] == r), None)
            if rec is not None and math.isfinite(rec["acc_mean"]):  # a point without a value is not promoted
                vals, ses = by_rung.setdefault(r, ({}, {}))
                vals[key], ses[key] = rec["acc_mean"], rec["decision_stderr"]
        if not by_rung:
            return None, {}, {}
        r = min(by_rung)
        return r, *by_rung[r]



def sync_rows(study, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """CSV rows of a synchronous halving search, one per point: a paused trial's row becomes
    ``pruned`` when its point was not promoted, stays ``paused`` while its rung awaits the decision,
    and is dropped when the point was promoted (the point's later trial has the row)."""
    decisions = study._storage.get_study_system_attrs(study._study_id).get(DECISIONS_ATTR) or {}
    trials = {t.number: t for t in study.get_trials(deepcopy=False)}
    out_rows = []
    for r in rows:
        t = trials[r["trial"]]
        if r.get("status") == "paused":
            decided = decisions.get(str(trial_rung(t)))
            if decided is not None and point_key(trial_params(t)) in decided["promoted"]:
                continue
            r["status"] = "pruned" if decided is not None else "paused"
        r["halving_rung"] = trial_rung(t)
        out_rows.append(r)
    return out_rows
