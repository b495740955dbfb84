"""A search worker: claims trials from the study one at a time and runs them until none is left."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from rich.console import Console

from gradprune.errors import GradpruneError
from gradprune.search.cache import CalibrationStore
from gradprune.search.dense_copy import DenseCopy
from gradprune.search.live import SearchDisplay
from gradprune.search.optuna_store import (
    set_trial_system_attr,
    set_trial_user_attr,
    stored_trial,
    trial_id_of,
)
from gradprune.search.spec import SEED_KEY, SearchSpec, recipe_for
from gradprune.search.study import (
    AttemptsView,
    Heartbeat,
    claim_waiting,
    decode,
    encode,
    owner_record,
    point_key,
    recover_stale,
    requeue,
)
from gradprune.search.table import write_results
from gradprune.search.trial import TrialOutcome, failed_outcome, run_trial


class Worker:
    """Runs trials of one study in this process; several workers may share the study."""

    def __init__(self, spec: SearchSpec, study, space: dict[str, list[Any]], out: Path, console: Console) -> None:
        self.spec, self.study, self.space, self.out, self.console = spec, study, space, out, console
        # what the results count: a failed point that was retried and ran again counts once
        self.attempts = AttemptsView(study)
        self.store = CalibrationStore(out / "cache" / "calibration")
        # the dense model's weights, kept in host memory for the next trial when they fit there
        self.dense = DenseCopy(console)
        self.quiet = Console(quiet=True)  # per-trial chatter stays out of the search's live table
        # screening and synchronous halving run in phases: claim(), and next_phase() when the queue is empty
        self.phases = None
        if spec.evaluation == "screen":
            from gradprune.search.screening import Screening

            self.phases = Screening(spec, study, space, out)
        elif spec.evaluation == "halving" and spec.halving_schedule() == "sync":
            from gradprune.search.halving import SyncHalving, rung_fractions

            n_rungs = len(rung_fractions(spec.halving.min_fraction, spec.halving.reduction_factor))
            self.phases = SyncHalving(spec, study, out, n_rungs)
        elif spec.evaluation == "halving":
            from gradprune.search.halving import StderrHalvingPruner

            # the pruner lives in the process, not the storage: every worker sets the same one
            study.pruner = StderrHalvingPruner(spec.halving.reduction_factor, spec.halving.k_stderr)

    def total(self) -> int:
        """How many trials the search has in all (so far: synchronous halving adds the promoted points)."""
        if self.spec.sampler == "grid":
            n = 1
            for v in self.space.values():
                n *= len(v)
            return n + (self.phases.added_trials() if self.phases is not None else 0)
        return int(self.spec.n_trials or 0)

    def finished(self) -> int:
        """Trials that ended for good (not the stale ones that were retried)."""
        return sum(1 for t in self.attempts.get_trials(deepcopy=False)
                   if t.state.is_finished() and not t.user_attrs.get("retried"))

    def _next(self) -> int | None:
        if self.phases is not None:
            return self.phases.claim()
        tid = claim_waiting(self.study)
        if tid is not None or self.spec.sampler == "grid":
            return tid
        from optuna.trial import TrialState

        live = sum(1 for t in self.attempts.get_trials(deepcopy=False)
                   if t.state in (TrialState.RUNNING, TrialState.COMPLETE, TrialState.FAIL, TrialState.PRUNED)
                   and not t.user_attrs.get("retried"))
        if live >= int(self.spec.n_trials or 0):
            return None
        trial = self.study.ask()
        set_trial_system_attr(self.study, trial_id_of(trial), "gradprune_owner", owner_record())
        return trial_id_of(trial)

    def run(self, max_trials: int | None = None) -> int:
        """Run trials until the study has none left (or ``max_trials`` ran here); returns how many ran."""
        from gradprune.run import trial_loader

        done = 0
        keys = list(self.space)
        # the display reads the study after each trial: every worker's trials count towards progress and ETA
        with SearchDisplay(self.console, keys, self.total(), self.finished(), study=self.study) as display:
            while max_trials is None or done < max_trials:
                recover_stale(self.study)
                tid = self._next()
                if tid is None and self.phases is not None and self.phases.next_phase():
                    display.set_total(self.total())
                    continue  # a next phase was enqueued (or trials of this one were re-enqueued)
                if tid is None:
                    break
                with trial_loader(self.dense.load):  # the trial restores the dense model from this worker's copy
                    self.run_one(tid, display)
                done += 1
                self.write_csv()
        return done

    def run_one(self, trial_id: int, display: SearchDisplay) -> None:
        """Run one claimed trial and tell the study its outcome (interrupts re-enqueue it)."""
        import optuna
        from optuna.trial import TrialState

        trial = optuna.trial.Trial(self.study, trial_id)
        point = {k: decode(trial.suggest_categorical(k, [encode(v) for v in vals])) for k, vals in self.space.items()}
        with Heartbeat(self.study, trial_id):
            display.started(trial.number, point)
            try:
                res = self._execute(trial, point)
            except GradpruneError as exc:
                res = replace(failed_outcome(exc, time.perf_counter()), duration_s=0.0)
            except KeyboardInterrupt:
                set_trial_user_attr(self.study, trial_id, "status", "interrupted")
                set_trial_user_attr(self.study, trial_id, "retried", True)
                self.study.tell(trial, state=TrialState.FAIL)
                requeue(self.study, stored_trial(self.study, trial_id))
                self.write_csv()
                raise
        seed = point.get(SEED_KEY)
        attrs = res.user_attrs()
        if seed is not None:
            attrs["seed"] = seed
        elif "calibration_seed" in res.metrics:
            attrs["seed"] = res.metrics["calibration_seed"]
        for k, v in attrs.items():
            set_trial_user_attr(self.study, trial_id, k, v)
        from gradprune.tracking import log_trial

        log_trial(self.out, trial.number, point, attrs)  # a run of the search's tracker group, if it has one
        value = res.metrics.get(self.spec.objective)
        if res.stopped is not None:  # pruned, paused or screened: stopped before a full evaluation
            self.study.tell(trial, state=TrialState.PRUNED)
        elif res.success and isinstance(value, (int, float)):
            self.study.tell(trial, float(value))
        elif res.success:
            self.study.tell(trial, 0.0)  # no objective (e.g. eval.run=none): the trial still counts as done
        else:
            self.study.tell(trial, state=TrialState.FAIL)
        display.finished(trial.number, {**point, **res.metrics, **attrs})

    def _execute(self, trial, point: dict[str, Any]) -> TrialOutcome:
        """Run one trial as the search's ``evaluation`` mode asks (full, in rungs, or by screening role)."""
        trial_dir = self.out / "trials" / f"trial_{trial.number}"
        if self.spec.evaluation == "halving":
            from gradprune.search.halving import SyncHalving, TrialReporter, run_halving_trial, trial_rung

            sync = isinstance(self.phases, SyncHalving)
            resume = (self.phases.examples, point_key(point), trial_rung(trial)) if sync else None
            return run_halving_trial(self.spec, recipe_for(self.spec, point), trial_dir, self.store, self.quiet,
                                     TrialReporter(self.study, trial, ask_pruner=not sync), resume)
        if self.phases is None:
            return run_trial(recipe_for(self.spec, point), trial_dir, self.store, self.quiet)
        role = self.phases.role(point)
        # a screened trial is calibrated and pruned only: its gradient statistics are what is predicted from
        recipe = recipe_for(self.spec, {**point, "eval.run": "none"} if role == "screened" else point)
        res = replace(run_trial(recipe, trial_dir, self.store, self.quiet), extra={"screen_role": role})
        if role == "screened" and res.success:
            res = replace(res, stopped="screened", evaluated=False)
        return res

    def write_csv(self) -> Path:
        """Rewrite search_results.csv from the study: one row per point, its latest attempt's."""
        return write_results(self.attempts, self.spec, self.out)
