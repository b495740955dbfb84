"""Successive halving over evaluation budget (``evaluation: halving``): a trial's evaluation in rungs.

Each trial is calibrated and pruned as usual, then evaluated in rungs (:mod:`.rungs`): 1/8 → 1/4 →
1/2 → all of every task's examples by default. The rule that stops a point (:func:`.rungs.promoted`:
the best ⌊n/η⌋ of a rung and every point within ``k_stderr`` decision stderrs of them go on) is
applied in one of two schedules:

* ``sync`` (:mod:`.sync`, the default for grid searches): a trial evaluates its point up to one rung
  and pauses; the rule is applied to every point of a rung at once.
* ``async`` (:mod:`.trial`): a trial runs all its rungs in one go, reporting each to Optuna and asking
  :class:`StderrHalvingPruner` — asynchronous successive halving (ASHA, as Optuna's
  ``SuccessiveHalvingPruner``) with the noise margin, which Optuna's pruner lacks. It decides against
  the trials that have reported the rung so far (nothing is pruned while fewer than η have), so the
  first trials of a search are never pruned for lack of comparison, a trial is never revisited when
  better ones arrive later, and the claim order changes the cost.

:mod:`.trial` runs one trial of either schedule (:func:`run_halving_trial`).
"""

from gradprune.search.halving.rungs import (
    PerExample,
    Reporter,
    RungOutcome,
    acc_mean_stderr,
    clearly_worse,
    decision_stderr,
    evaluate_in_rungs,
    example_order,
    promoted,
    rung_fractions,
    rung_metrics,
    rung_subsets,
    survivors_cut,
)
from gradprune.search.halving.sync import (
    DECISIONS_ATTR,
    RUNG_ATTR,
    PointExamples,
    SyncHalving,
    sync_rows,
    trial_rung,
)
from gradprune.search.halving.trial import (
    RUNGS_ATTR,
    RungEvaluation,
    StderrHalvingPruner,
    TrialReporter,
    run_halving_trial,
    stderr_at,
)

__all__ = [
    "DECISIONS_ATTR", "RUNGS_ATTR", "RUNG_ATTR", "PerExample", "PointExamples", "Reporter", "RungEvaluation",
    "RungOutcome", "StderrHalvingPruner", "SyncHalving", "TrialReporter", "acc_mean_stderr", "clearly_worse",
    "decision_stderr", "evaluate_in_rungs", "example_order", "promoted", "rung_fractions", "rung_metrics",
    "rung_subsets", "run_halving_trial", "stderr_at", "survivors_cut", "sync_rows", "trial_rung",
]
