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


def acc_mean_stderr(per_example: PerExample, tasks: list[str]) -> float:
    """Standard error of ``acc_mean`` (the unweighted mean of per-task accuracies) on the examples scored:
    per task lm-eval's acc_stderr, √(p(1−p)/(n−1)) (the sample sd of the 0/1 scores over √n), combined as
    √(Σ_t se_t²)/T, treating tasks as independent. A task with one example counts with the largest
    possible se, 0.5."""
    total = 0.0
    for t in tasks:
        scores = [ex["acc"] for ex in per_example.get(t, {}).values() if "acc" in ex]
        n = len(scores)
        if n == 0:
            continue
        p = sum(scores) / n
        total += p * (1 - p) / (n - 1) if n > 1 else 0.25
    return math.sqrt(total) / len(tasks) if tasks else float("nan")


@dataclass
class RungOutcome:
    """Where a trial's evaluation stopped: metrics so far, per-rung records, and whether it was stopped."""

    metrics: dict[str, float]
    rungs: list[dict[str, Any]]
    scored: dict[str, int]  # examples scored per task
    stopped: bool


def evaluate_in_rungs(model: Any, tokenizer: Any, cfg: Any, subsets: list[dict[str, list[int]]],
                      fractions: list[float], report: Reporter,
                      evaluate: Callable[..., PerExample] | None = None) -> RungOutcome:
    """Score the rungs in order, only new examples each time; stop when ``report`` says so."""
    from gradprune.eval.zeroshot import aggregate_examples

    if evaluate is None:
        from gradprune.eval.evaluation import evaluate_examples as evaluate
    tasks = list(subsets[-1])
    scored: PerExample = {t: {} for t in tasks}
    rungs: list[dict[str, Any]] = []
    metrics: dict[str, float] = {}
    for r, (subset, frac) in enumerate(zip(subsets, fractions, strict=True)):
        start = time.perf_counter()
        new = {t: [i for i in ix if i not in scored[t]] for t, ix in subset.items()}
        if any(new.values()):
            for t, rows in evaluate(model, tokenizer, cfg, new).items():
                scored[t].update(rows)
        metrics = aggregate_examples(scored, tasks)
        acc, se = metrics.get("acc_mean", float("nan")), acc_mean_stderr(scored, tasks)
        final = r == len(subsets) - 1
        rungs.append({"rung": r, "fraction": frac, "acc_mean": acc, "stderr": se,
                      "examples": sum(map(len, scored.values())), "new_examples": sum(map(len, new.values())),
                      "seconds": time.perf_counter() - start})
        if report(r, frac, acc, se, final) and not final:
            return RungOutcome(metrics, rungs, {t: len(v) for t, v in scored.items()}, True)
    return RungOutcome(metrics, rungs, {t: len(v) for t, v in scored.items()}, False)


def rung_metrics(outcome: RungOutcome) -> dict[str, float]:
    """Flat metrics of a rung evaluation: the full metrics (+ ``acc_mean_stderr``) when it ran to the end;
    for a stopped trial only ``eval_fraction``, ``acc_mean_at_fraction`` (+ ``_stderr``) and the count of
    examples, never ``acc_mean`` or ``acc_<task>``: those names mean "on every example"."""
    last = outcome.rungs[-1]
    extra = {"eval_fraction": last["fraction"], "examples_evaluated": last["examples"]}
    if not outcome.stopped:
        return {**outcome.metrics, "acc_mean_stderr": last["stderr"], **extra}
    return {**extra, "acc_mean_at_fraction": last["acc_mean"], "acc_mean_at_fraction_stderr": last["stderr"]}
