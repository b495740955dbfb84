"""Replay synchronous successive halving on stored per-example results, over many subset draws.

One halving search is one draw of the nested example subsets (they are seeded by the search's
``seed``); whether it finds the best setting, and what it costs, varies from draw to draw. This module
scores every grid point once on every example (``gather``), then replays the halving decisions — the
same functions the search uses (:func:`gradprune.search.halving.rung_subsets`, ``decision_stderr``,
``promoted``) — for subset seeds 0..S−1 and several rule settings, without evaluating again.
``benchmarks/search.py`` checks that the replay of the search's own seed reproduces the real search.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

from gradprune.search.halving import PerExample, decision_stderr, promoted, rung_fractions, rung_subsets


def gather(spec_path: Path, overrides: list[str], cache: Path, out_file: Path) -> dict[str, PerExample]:
    """Per grid point (``key=value,…``), lm-eval's per-example results on every example of every task,
    from the pruned model of that point (calibrations from the ``cache`` dir); written to ``out_file``."""
    from rich.console import Console

    from gradprune.eval import evaluate_examples, zeroshot_task_sizes
    from gradprune.run import run_experiment
    from gradprune.search.cache import CalibrationStore
    from gradprune.search.spec import load_search_spec, recipe_for

    spec = load_search_spec(spec_path, overrides)
    store = CalibrationStore(cache)
    results: dict[str, PerExample] = {}
    for point in spec.points():
        name = ",".join(f"{k.split('.')[-1]}={v}" for k, v in sorted(point.items()))

        def stage(recipe, loaded, console, dense, name=name):
            sizes = zeroshot_task_sizes(recipe.eval)
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


def main() -> None:
    """Gather per-example results for a search recipe's grid (optionally on other task files) and print
    the replay table; e.g. on the larger test splits of ``benchmarks/large_tasks.py``:

        python benchmarks/search_replay.py results/bench_search/full.yaml \\
            --cache results/bench_search/calibrate/cache/calibration --task_dir results/large_tasks
    """
    import argparse
    import os

    import torch
    from search import REPLAY_RULES, markdown

    ap = argparse.ArgumentParser(description=main.__doc__.splitlines()[0])
    ap.add_argument("spec", help="search recipe (its grid and base recipe)")
    ap.add_argument("--cache", required=True, help="calibration cache dir of a search over that grid")
    ap.add_argument("--task_dir", help="eval.task_dir for every point (default: the recipe's)")
    ap.add_argument("--out", default=None, help="per-example results JSON (default: next to the spec)")
    ap.add_argument("--seeds", type=int, default=50)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    os.environ.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    torch.set_num_threads(args.threads)
    overrides = [f"eval.task_dir={args.task_dir}"] if args.task_dir else []
    out = Path(args.out) if args.out else Path(args.spec).with_name("per_example_replay.json")
    results = gather(Path(args.spec), overrides, Path(args.cache), out)
    sizes = {t: len(rows) for t, rows in next(iter(results.values())).items()}
    full = {t: list(range(n)) for t, n in sizes.items()}
    acc = {p: accuracy(per, full) for p, per in results.items()}
    best = max(acc, key=lambda p: (acc[p], -list(acc).index(p)))
    per = results[best]
    best_se = sum(statistics.pvariance([x["acc"] for x in per[t].values()]) / (len(per[t]) - 1)
                  for t in per) ** 0.5 / len(per)
    print(f"items per task: {sizes}")
    print("acc_mean per point: " + ", ".join(f"{p} {a:.4f}" for p, a in sorted(acc.items(), key=lambda x: -x[1])))
    print(f"best {best}, stderr {best_se:.4f}")
    print(markdown(summary(results, REPLAY_RULES, args.seeds, best_se)))


if __name__ == "__main__":
    main()
