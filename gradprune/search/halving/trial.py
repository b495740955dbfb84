"""One halving trial: the pruned model's evaluation in rungs inside ``run_experiment``, each rung
reported to the study, and (``async`` schedule) :class:`StderrHalvingPruner`, which decides whether
the trial goes on. See :mod:`gradprune.search.halving` for both schedules.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

from optuna.pruners import BasePruner  # ~0.2 s; this module is imported only when a search runs
from rich.console import Console

from gradprune.search.halving.rungs import (
    RungOutcome,
    clearly_worse,
    evaluate_in_rungs,
    rung_fractions,
    rung_metrics,
    rung_subsets,
    survivors_cut,
)
from gradprune.search.trial import TrialOutcome, failed_outcome, trial_metrics

RUNGS_ATTR = "halving_rungs"  # user attr: the trial's per-rung records (value, stderr, examples)


class StderrHalvingPruner(BasePruner):
    """ASHA that never prunes a trial within ``k_stderr`` standard errors of the rung's survivors."""

    def __init__(self, reduction_factor: int = 2, k_stderr: float = 1.0) -> None:
        self.reduction_factor = reduction_factor
        self.k_stderr = k_stderr

    def prune(self, study, trial) -> bool:
        """Optuna's pruner interface: True to stop ``trial`` at its last reported step."""
        from optuna.trial import TrialState

        step = trial.last_step
        if step is None:
            return False
        value = trial.intermediate_values[step]
        values = [value]
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)):
            if t.number != trial.number and step in t.intermediate_values and not t.user_attrs.get("retried"):
                values.append(t.intermediate_values[step])
        return clearly_worse(value, stderr_at(trial, step), survivors_cut(values, self.reduction_factor),
                             self.k_stderr)


def stderr_at(trial, step: int) -> float:
    """The stderr a trial recorded with its report at ``step`` (0 when it recorded none)."""
    for rec in trial.user_attrs.get(RUNGS_ATTR, []):
        if rec.get("rung") == step and isinstance(rec.get("stderr"), int | float) and math.isfinite(rec["stderr"]):
            return float(rec["stderr"])
    return 0.0


class TrialReporter:
    """Reports a running trial's rungs to the study and (asynchronous halving) asks the pruner
    (the Reporter of :mod:`.rungs`). Records hold the decision stderr, which the pruner reads."""

    def __init__(self, study, trial, ask_pruner: bool = True) -> None:
        self.study, self.trial, self.ask_pruner = study, trial, ask_pruner
        self.records: list[dict[str, Any]] = []

    def __call__(self, rung: int, fraction: float, value: float, stderr: float, final: bool) -> bool:
        self.records.append({"rung": rung, "fraction": fraction, "acc_mean": value, "stderr": stderr})
        # the stderr first: the pruner reads it from the trial when it decides (through the Trial, whose
        # cached copy is what should_prune hands the pruner; the storage alone would not update it)
        self.trial.set_user_attr(RUNGS_ATTR, self.records)
        if math.isfinite(value):
            self.trial.report(value, rung)
        return self.ask_pruner and not final and math.isfinite(value) and self.trial.should_prune()


class RungEvaluation:
    """The pruned model's evaluation for ``run_experiment`` (its ``pruned_eval``): perplexity in full (if
    asked), zero-shot in rungs. After the run, :attr:`outcome` says where the zero-shot evaluation stopped.

    ``resume = (PointExamples, point key, rung)`` (synchronous halving): start from the point's stored
    per-example results, evaluate up to that rung only, store the results again; perplexity is
    computed in the point's first trial and carried over from the store after that."""

    def __init__(self, spec, reporter, resume=None) -> None:
        self.spec, self.reporter, self.resume = spec, reporter, resume
        #: set when the evaluation ran: the rungs evaluated and whether the trial was stopped
        self.outcome: RungOutcome | None = None

    def __call__(self, recipe, loaded, console, dense) -> tuple[dict[str, Any], dict[str, Any]]:
        """``run_experiment``'s evaluation stage: (flat metrics, run.json's ``eval`` section)."""
        from gradprune.eval import add_dense_comparison, zeroshot_task_sizes

        cfg, resume, halving = recipe.eval, self.resume, self.spec.halving
        stored = resume[0].load(resume[1]) if resume else ({}, [], {})
        metrics, info = _perplexity(loaded, cfg, console, stored[2])
        start = time.perf_counter()
        sizes = zeroshot_task_sizes(cfg)
        fractions = rung_fractions(halving.min_fraction, halving.reduction_factor)
        outcome = evaluate_in_rungs(loaded.model, loaded.tokenizer, cfg,
                                    rung_subsets(sizes, fractions, self.spec.seed), fractions, self.reporter,
                                    scored=stored[0], rungs=stored[1], last=resume[2] if resume else None)
        self.outcome = outcome
        if resume:
            resume[0].save(resume[1], outcome.per_example, outcome.rungs, {"metrics": metrics, "info": info})
        metrics.update(rung_metrics(outcome))
        new = sum(r["new_examples"] for r in outcome.rungs[len(stored[1]):])
        info["zeroshot"] = {"protocol": "lm-eval per-example scores on nested example subsets (successive halving)",
                            "n": outcome.scored, "n_new": new, "n_original": sizes, "rungs": outcome.rungs,
                            "stopped": outcome.stopped}
        info.setdefault("seconds", {})["zeroshot"] = time.perf_counter() - start
        return (add_dense_comparison(metrics, dense) if dense else metrics), info


def _perplexity(loaded, cfg, console, stored: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Perplexity metrics and info (``eval.run: all`` with datasets), or those stored for the point."""
    from gradprune.eval import evaluate

    if stored:
        return dict(stored["metrics"]), {**stored["info"], "seconds": {}}
    info: dict[str, Any] = {"run": cfg.run, "seconds": {}}
    if cfg.run != "all" or not cfg.ppl_datasets:
        return {}, info
    res = evaluate(loaded.model, loaded.tokenizer, cfg.model_copy(update={"run": "ppl"}), console=console)
    return dict(res.metrics), {**info, "ppl": res.info.get("ppl"), "seconds": res.info.get("seconds", {})}


def run_halving_trial(spec, recipe, trial_dir: Path, store, console: Console, reporter,
                      resume=None) -> TrialOutcome:
    """Like :func:`gradprune.search.trial.run_trial`, with the evaluation in rungs; a trial the pruner
    stopped is a success stopped as ``pruned`` and not evaluated (``paused`` under synchronous halving,
    where the decision comes later: see ``resume`` in :class:`RungEvaluation`)."""
    from gradprune.record import write_output
    from gradprune.run import run_experiment

    t0 = time.perf_counter()
    evaluation = RungEvaluation(spec, reporter, resume)
    try:
        out = run_experiment(recipe, console, store=store, keep_model=recipe.output.save_model,
                             pruned_eval=evaluation)
        if not out.writes:
            raise SystemExit(0)  # DDP / FSDP rank > 0: rank 0 records the trial
        write_output(out, trial_dir, recipe.output.save_model)
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # noqa: BLE001 - failure isolation, as in run_trial
        return failed_outcome(exc, t0)
    metrics = trial_metrics(out)
    res = TrialOutcome(metrics, True, "", time.perf_counter() - t0)
    at_fraction = metrics.get("acc_mean_at_fraction")
    if evaluation.outcome.stopped and not (isinstance(at_fraction, float) and math.isfinite(at_fraction)):
        res.success, res.error = False, "NaN in acc_mean_at_fraction"
    elif evaluation.outcome.stopped:
        res.stopped, res.evaluated = ("paused" if resume else "pruned"), False
    elif not isinstance(metrics.get("acc_mean"), float) or math.isnan(metrics["acc_mean"]):
        res.success, res.error = False, "NaN in acc_mean"
    return res
