"""Replay synchronous successive halving on stored per-example results, over many subset draws.

One halving search is one draw of the nested example subsets (they are seeded by the search's
``seed``); whether it finds the best setting, and what it costs, varies from draw to draw. This module
scores every grid point once on every example (``gather``), then replays the halving decisions — the
same functions the search uses (:func:`gradprune.search.rungs.rung_subsets`, ``decision_stderr``,
``promoted``) — for subset seeds 0..S−1 and several rule settings, without evaluating again.
``benchmarks/search.py`` checks that the replay of the search's own seed reproduces the real search.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

from gradprune.search.rungs import PerExample, decision_stderr, promoted, rung_fractions, rung_subsets


def gather(spec_path: Path, overrides: list[str], cache: Path, out_file: Path) -> dict[str, PerExample]:
    """Per grid point (``key=value,…``), lm-eval's per-example results on every example of every task,
    from the pruned model of that point (calibrations from the ``cache`` dir); written to ``out_file``."""
    from rich.console import Console

    from gradprune.eval.evaluation import evaluate_examples
    from gradprune.eval.zeroshot import task_sizes
    from gradprune.run import run_experiment
    from gradprune.search.cache import CalibrationStore
    from gradprune.search.spec import load_search_spec, recipe_for

    spec = load_search_spec(spec_path, overrides)
    store = CalibrationStore(cache)
    results: dict[str, PerExample] = {}
    for point in spec.points():
        name = ",".join(f"{k.split('.')[-1]}={v}" for k, v in sorted(point.items()))

        def stage(recipe, loaded, console, dense, name=name):
            sizes = task_sizes(recipe.eval)
            results[name] = evaluate_examples(loaded.model, loaded.tokenizer, recipe.eval,
                                              {t: list(range(n)) for t, n in sizes.items()})
            return {}, {}

        run_experiment(recipe_for(spec, point), Console(quiet=True), store=store, pruned_eval=stage)
    out_file.write_text(json.dumps(results))
    return results


def accuracy(per: PerExample, subset: dict[str, list[int]]) -> float:
    """acc_mean (unweighted over tasks) on the given examples."""
    return sum(sum(per[t][i]["acc"] for i in ix) / len(ix) for t, ix in subset.items()) / len(subset)


def replay(results: dict[str, PerExample], min_fraction: float, eta: int, k: float, seed: int) -> dict[str, Any]:
    """One synchronous halving search on stored results: the examples it scores and what it picks."""
    sizes = {t: len(rows) for t, rows in next(iter(results.values())).items()}
    fractions = rung_fractions(min_fraction, eta)
    subsets = rung_subsets(sizes, fractions, seed)
    alive, reached = list(results), {}
    for r, subset in enumerate(subsets):
        reached.update({p: r for p in alive})
        if r == len(subsets) - 1:
            break
        vals = {p: accuracy(results[p], subset) for p in alive}
        ses = {p: decision_stderr({t: {i: results[p][t][i] for i in ix} for t, ix in subset.items()}, sizes,
                                  list(sizes)) for p in alive}
        alive = sorted(promoted(vals, ses, eta, k))
    examples = sum(sum(len(ix) for ix in subsets[r].values()) for r in reached.values())
    full = {t: list(range(n)) for t, n in sizes.items()}
    best = max(alive, key=lambda p: (accuracy(results[p], full), -list(results).index(p)))
    return {"examples": examples, "fully_evaluated": sorted(alive), "best": best}


def summary(results: dict[str, PerExample], rules: list[tuple[float, int, float]], seeds: int,
            best_se: float) -> list[dict[str, Any]]:
    """Per rule (min_fraction, η, k): the examples ratio over ``seeds`` subset draws (mean, range) and
    how often the pick is the full search's best, or within ``best_se`` of it."""
    sizes = {t: len(rows) for t, rows in next(iter(results.values())).items()}
    full = {t: list(range(n)) for t, n in sizes.items()}
    acc = {p: accuracy(per, full) for p, per in results.items()}
    best = max(acc, key=lambda p: (acc[p], -list(acc).index(p)))
    total = len(results) * sum(sizes.values())
    rows = []
    for min_fraction, eta, k in rules:
        runs = [replay(results, min_fraction, eta, k, s) for s in range(seeds)]
        ratios = [r["examples"] / total for r in runs]
        rows.append({"min_fraction": f"1/{round(1 / min_fraction)}", "η": eta, "k_stderr": k,
                     "examples ratio (mean)": statistics.mean(ratios), "min": min(ratios), "max": max(ratios),
                     "same best": f"{sum(r['best'] == best for r in runs)}/{seeds}",
                     "within 1 se": f"{sum(acc[best] - acc[r['best']] <= best_se for r in runs)}/{seeds}"})
    return rows
