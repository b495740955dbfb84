"""Synchronous successive halving (``halving.schedule: sync``, the default for grid searches).

Every grid point is enqueued at rung 0. A trial evaluates its point up to one rung — the pruned model
is rebuilt from the calibration cache, the point's per-example results of earlier rungs are read back
(:class:`PointExamples`), only the rung's new examples are scored — and ends ``paused`` (Optuna state
PRUNED). When no trial is waiting or running, one worker (under the search's file lock) decides the
lowest undecided rung over every point that finished it (:func:`.rungs.promoted`: the best ⌊n/η⌋
and every point within ``k_stderr`` standard errors of them) and enqueues the promoted points at the
next rung. The decision depends on the points' values only, never on the order the
trials ran in (asynchronous halving decides each trial against those seen so far). Decisions are
stored in the study (``gradprune_halving``), so a resumed search or another worker sees the same ones.

A point costs one model load and surgery per rung it reaches (a few seconds on a 7B model against
minutes of evaluation per rung); every example is still scored once.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any

from gradprune.files import atomic_write_json
from gradprune.search.halving.rungs import PerExample, clearly_worse, promoted, survivors_cut
from gradprune.search.optuna_store import set_study_system_attr, study_system_attrs
from gradprune.search.study import claim_waiting, file_lock, point_key, trial_params, wait_until_idle

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
        """rung (as text) → {cut, promoted, values, stderrs} for every rung decided so far."""
        return study_system_attrs(self.study).get(DECISIONS_ATTR) or {}

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
        """Called when the queue is empty: wait for running trials, then decide every undecided rung and
        enqueue the promoted points. True when there may be trials to claim again."""
        from optuna.trial import TrialState

        if wait_until_idle(self.study, self.POLL_S):
            return True
        with file_lock(self.out / ".search.lock"):
            if self.study.get_trials(deepcopy=False, states=(TrialState.WAITING, TrialState.RUNNING)):
                return True  # another worker decided meanwhile
            decisions = self.decisions()
            changed = self.decide(decisions)
            if changed:
                set_study_system_attr(self.study, DECISIONS_ATTR, decisions)
            # after the decision is stored: a search killed in between enqueues what is missing next time
            enqueued = self.enqueue_missing(decisions)
        if changed:
            atomic_write_json(self.out / "halving_decisions.json", decisions)
        return enqueued > 0

    def decide(self, decisions: dict[str, Any]) -> bool:
        """Decide, in place, every rung that points finished: a rung without a decision over all its
        points at once; a point that finished an already decided rung late (its trial was re-run after a
        worker died) against that rung's stored cut. True when anything was decided."""
        eta, k = self.spec.halving.reduction_factor, self.spec.halving.k_stderr
        pending = self.pending(decisions)
        for r in sorted(pending):
            values, stderrs = pending[r]
            if str(r) not in decisions:
                cut = survivors_cut(list(values.values()), eta)
                keep = promoted(values, stderrs, eta, k)
                decisions[str(r)] = {"cut": max(values.values()) if cut is None else cut, "promoted": sorted(keep),
                                     "values": values, "stderrs": stderrs}
                continue
            d = decisions[str(r)]
            for key, v in values.items():
                d["values"][key], d["stderrs"][key] = v, stderrs[key]
                if not clearly_worse(v, stderrs[key], d["cut"], k):
                    d["promoted"] = sorted({*d["promoted"], key})
        return bool(pending)

    def pending(self, decisions: dict[str, Any]) -> dict[int, tuple[dict[str, float], dict[str, float]]]:
        """Per rung below the last, the points that finished it and are in no decision yet: value and
        decision stderr (a point without a finite value is never promoted)."""
        by_rung: dict[int, tuple[dict[str, float], dict[str, float]]] = {}
        for key, t in self.latest().items():
            r = trial_rung(t)
            if r >= self.n_rungs - 1 or key in decisions.get(str(r), {}).get("values", {}):
                continue
            if not t.user_attrs.get("success"):
                continue
            rec = next((x for x in self.examples.load(key)[1] if x["rung"] == r), None)
            if rec is not None and math.isfinite(rec["acc_mean"]):
                vals, ses = by_rung.setdefault(r, ({}, {}))
                vals[key], ses[key] = rec["acc_mean"], rec["decision_stderr"]
        return by_rung

    def enqueue_missing(self, decisions: dict[str, Any]) -> int:
        """Enqueue every promoted point that has no trial at the next rung; returns how many."""
        have = {(point_key(trial_params(t)), trial_rung(t)) for t in self.study.get_trials(deepcopy=False)
                if not t.user_attrs.get("retried")}
        added = 0
        for r, d in sorted(decisions.items(), key=lambda x: int(x[0])):
            for key in d["promoted"]:
                if (key, int(r) + 1) not in have:
                    self.study.enqueue_trial(json.loads(key), user_attrs={RUNG_ATTR: int(r) + 1})
                    added += 1
        return added


def sync_rows(study, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """CSV rows of a synchronous halving search, one per point: its latest trial's. A paused trial's
    row says ``pruned`` when its point was not promoted, ``promoted`` when it was (its next rung has not
    finished yet), ``paused`` while its rung awaits the decision."""
    decisions = study_system_attrs(study).get(DECISIONS_ATTR) or {}
    trials = {t.number: t for t in study.get_trials(deepcopy=False)}
    latest: dict[str, dict[str, Any]] = {}
    for r in sorted(rows, key=lambda r: r["trial"]):
        t = trials[r["trial"]]
        if r.get("status") == "paused":
            decided = decisions.get(str(trial_rung(t)))
            promoted_here = decided is not None and point_key(trial_params(t)) in decided["promoted"]
            r["status"] = "paused" if decided is None else "promoted" if promoted_here else "pruned"
        r["halving_rung"] = trial_rung(t)
        latest[point_key(trial_params(t))] = r
    return sorted(latest.values(), key=lambda r: r["trial"])
