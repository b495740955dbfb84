"""Evaluation in rungs: nested, deterministic subsets of every task's examples, scored once each.

Rung fractions are powers of 1/η down to ``min_fraction`` (η = ``reduction_factor``): with
``min_fraction=0.125, η=2`` they are 1/8, 1/4, 1/2, 1; with ``0.1, η=3`` they are 1/9, 1/3, 1. Rung r of
a task with n examples is the first ⌈f_r·n⌉ indices of a permutation of the task's examples seeded by
(search seed, task name, n): the same subsets for every trial of a search, each rung a prefix of the
next. A trial's examples are scored once: rung r evaluates only the indices rung r−1 did not hold and
merges the per-example results, so the last rung's metrics equal a full evaluation's.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

PerExample = dict[str, dict[int, dict[str, float]]]  # task → doc index → metric → value
# report(rung, fraction, acc_mean, stderr, final) → True when the trial should stop here
Reporter = Callable[[int, float, float, float, bool], bool]


def rung_fractions(min_fraction: float, reduction_factor: int) -> list[float]:
    """1/η^K, …, 1/η, 1 with K the largest power whose fraction is still ≥ ``min_fraction``."""
    k = 0
    while reduction_factor ** -(k + 1) >= min_fraction * (1 - 1e-9):
        k += 1
    return [float(reduction_factor ** -(k - r)) for r in range(k + 1)]


def example_order(task: str, n: int, seed: int) -> list[int]:
    """A permutation of ``range(n)`` that depends only on (seed, task, n), never on the process."""
    import numpy as np

    digest = hashlib.sha256(f"{seed}|{task}|{n}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little")).permutation(n).tolist()


def rung_subsets(sizes: dict[str, int], fractions: list[float], seed: int) -> list[dict[str, list[int]]]:
    """Per rung, per task, the example indices evaluated by the end of that rung (nested prefixes)."""
    orders = {t: example_order(t, n, seed) for t, n in sizes.items()}
    return [{t: orders[t][: max(1, math.ceil(f * n))] if n else [] for t, n in sizes.items()} for f in fractions]


def acc_mean_stderr(per_example: PerExample, tasks: list[str], sizes: dict[str, int] | None = None) -> float:
    """Standard error of ``acc_mean`` (the unweighted mean of per-task accuracies) on the examples scored:
    per task lm-eval's acc_stderr, √(p(1−p)/(n−1)) (the sample sd of the 0/1 scores over √n), combined as
    √(Σ_t se_t²)/T, treating tasks as independent. A task with one example counts with the largest
    possible se, 0.5. With ``sizes`` (examples per task in all), each task's variance takes the
    finite-population factor (N−n)/(N−1): see :func:`decision_stderr`."""
    total = 0.0
    for t in tasks:
        scores = [ex["acc"] for ex in per_example.get(t, {}).values() if "acc" in ex]
        n = len(scores)
        if n == 0:
            continue
        p = sum(scores) / n
        var = p * (1 - p) / (n - 1) if n > 1 else 0.25
        if sizes is not None:
            big_n = sizes.get(t, 0)
            var *= (big_n - n) / (big_n - 1) if big_n > n else 0.0
        total += var
    return math.sqrt(total) / len(tasks) if tasks else float("nan")


def decision_stderr(per_example: PerExample, sizes: dict[str, int], tasks: list[str]) -> float:
    """The stderr the halving rule uses: that of ``acc_mean`` on the examples scored *as an estimate of
    acc_mean on all of each task's examples* (what a full evaluation would report). Sampling a subset
    of a fixed test set without replacement, each task's stderr shrinks by the finite-population
    factor √((N−n)/(N−1)): 0 once every example is scored, √(7/8) at 1/8."""
    return acc_mean_stderr(per_example, tasks, sizes)


def survivors_cut(values: list[float], reduction_factor: int) -> float | None:
    """The value of a rung's worst survivor: its best ⌊n/η⌋ (at least one when n ≥ η); None when
    fewer than η values are there to compare."""
    keep = len(values) // reduction_factor
    return sorted(values, reverse=True)[keep - 1] if keep else None


def clearly_worse(value: float, stderr: float, cut: float | None, k_stderr: float) -> bool:
    """The halving rule: below the survivors by more than ``k_stderr`` standard errors."""
    return cut is not None and value + k_stderr * stderr < cut


def promoted(values: dict[Any, float], stderrs: dict[Any, float], reduction_factor: int,
             k_stderr: float) -> set[Any]:
    """Synchronous successive halving: of the trials that finished a rung (key → value, stderr), those
    that go on — the best ⌊n/η⌋ and every one within ``k_stderr`` standard errors of them. Depends only
    on the values, never on the order the trials ran in."""
    cut = survivors_cut(list(values.values()), reduction_factor)
    if cut is None:  # fewer than η: keep the best one(s) only, as successive halving would
        top = max(values.values(), default=None)
        return {k for k, v in values.items() if v == top}
    return {k for k, v in values.items() if not clearly_worse(v, stderrs[k], cut, k_stderr)}


@dataclass
class RungOutcome:
    """Where a trial's evaluation stopped: metrics so far, per-rung records, and whether it was stopped."""

    metrics: dict[str, float]
    rungs: list[dict[str, Any]]
    scored: dict[str, int]  # examples scored per task
    stopped: bool  # ended before the final rung (pruned, or paused for a synchronous decision)
    per_example: PerExample | None = None


def evaluate_in_rungs(model: Any, tokenizer: Any, cfg: Any, subsets: list[dict[str, list[int]]],
                      fractions: list[float], report: Reporter,
                      evaluate: Callable[..., PerExample] | None = None, scored: PerExample | None = None,
                      rungs: list[dict[str, Any]] | None = None, last: int | None = None) -> RungOutcome:
    """Score the rungs in order, only new examples each time; stop when ``report`` says so.

    ``scored`` and ``rungs`` carry a point's earlier per-example results and rung records (synchronous
    halving resumes a point in a new trial): rungs already recorded are not evaluated or reported
    again. ``last`` stops after that rung (default: the final one). ``report`` gets the
    :func:`decision_stderr`; each record holds it and lm-eval's stderr."""
    from gradprune.eval import aggregate_examples

    if evaluate is None:
        from gradprune.eval import evaluate_examples as evaluate
    tasks = list(subsets[-1])
    sizes = {t: len(ix) for t, ix in subsets[-1].items()}
    scored = {t: dict((scored or {}).get(t, {})) for t in tasks}
    rungs = list(rungs or [])
    last = len(subsets) - 1 if last is None else last
    metrics = aggregate_examples(scored, tasks) if rungs else {}
    for r in range(len(rungs), last + 1):
        subset, frac = subsets[r], fractions[r]
        start = time.perf_counter()
        new = {t: [i for i in ix if i not in scored[t]] for t, ix in subset.items()}
        if any(new.values()):
            for t, rows in evaluate(model, tokenizer, cfg, new).items():
                scored[t].update(rows)
        metrics = aggregate_examples(scored, tasks)
        acc, se = metrics.get("acc_mean", float("nan")), decision_stderr(scored, sizes, tasks)
        final = r == len(subsets) - 1
        rungs.append({"rung": r, "fraction": frac, "acc_mean": acc, "stderr": acc_mean_stderr(scored, tasks),
                      "decision_stderr": se, "examples": sum(map(len, scored.values())),
                      "new_examples": sum(map(len, new.values())), "seconds": time.perf_counter() - start})
        if report(r, frac, acc, se, final) and not final:
            return RungOutcome(metrics, rungs, {t: len(v) for t, v in scored.items()}, True, scored)
    return RungOutcome(metrics, rungs, {t: len(v) for t, v in scored.items()}, last < len(subsets) - 1, scored)


def rung_metrics(outcome: RungOutcome) -> dict[str, float]:
    """Flat metrics of a rung evaluation: the full metrics (+ ``acc_mean_stderr``) when it ran to the end;
    for a stopped trial only ``eval_fraction``, ``acc_mean_at_fraction`` (+ ``_stderr``) and the count of
    examples, never ``acc_mean`` or ``acc_<task>``: those names mean "on every example"."""
    last = outcome.rungs[-1]
    extra = {"eval_fraction": last["fraction"], "examples_evaluated": last["examples"]}
    if not outcome.stopped:
        return {**outcome.metrics, "acc_mean_stderr": last["stderr"], **extra}
    return {**extra, "acc_mean_at_fraction": last["acc_mean"], "acc_mean_at_fraction_stderr": last["stderr"]}
