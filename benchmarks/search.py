"""A search that evaluates less: full evaluation vs successive halving vs predictor screening.

Run by hand (not part of the tests); the default run takes about 10 minutes on 2 CPU cores:

    python benchmarks/search.py [--output_dir results/bench_search] [--threads 1]

A 3 × 3 grid (window lengths 16/64/256 × window counts 8/32/128, one calibration seed) at the 40 %
pruning of ``recipes/tiny_param_search.yaml`` (whose own grid is 3 × 2 with 3 seeds), on the embedded
tiny model and all 300 test items of each of its five tasks
(``recipes/tiny.yaml``, zero-shot only, no perplexity, no dense evaluation), is searched with full
evaluation, synchronous successive halving (the default; grid order and the grid lists reversed, which
must cost the same), asynchronous halving (both orders: it decides against the trials seen so far) and
predictor screening. Calibrations are computed once up front and copied into each search's cache, so
the searches differ only in what they evaluate. For each search it reports the examples scored by
lm-eval (ratio to the full search), wall time (ratio), and whether its best setting is the full
search's best, or one whose full-search accuracy is within one standard error of the best's.

One halving search is one draw of the nested example subsets. The replay (``search_replay.py``) scores
every point on every example once more and replays synchronous halving for 50 subset draws and
several rule settings; the replay of the searches' own draw must reproduce the real halving search.

The ratio is that recipe's 0.4 because at 0.2 the tiny model's accuracy hardly depends on the
calibration setting, which would make "the best setting" a coin toss for every method.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))  # search_replay
# the grid and ratio of recipes/tiny_param_search.yaml (one calibration seed instead of three)
GRID = {"calibration.seq_len": [16, 64, 256], "calibration.num_samples": [8, 32, 128]}
RATIO = 0.4
HALVING = {"min_fraction": 0.125, "reduction_factor": 2, "k_stderr": 1.0}
ASYNC = {"halving": {**HALVING, "schedule": "async"}}
# name → (evaluation, its settings, grid lists reversed: the points are claimed in the opposite order)
MODES = {
    "full": ("full", {}, False),
    "halving": ("halving", {"halving": HALVING}, False),
    "halving_reversed": ("halving", {"halving": HALVING}, True),
    # asynchronous halving decides against the trials seen so far: the claim order matters
    "halving_async": ("halving", ASYNC, False),
    "halving_async_reversed": ("halving", ASYNC, True),
    # n_initial = 4: the analysis' predictors need at least four evaluated rows
    "screen": ("screen", {"screen": {"n_initial": 4, "top_k": 2, "coverage": 0}}, False),
}


# (min_fraction, reduction factor η, k_stderr) replayed over many subset draws
REPLAY_RULES = [(1 / 8, 2, 1.0), (1 / 8, 2, 0.5), (1 / 9, 3, 1.0), (1 / 16, 4, 1.0), (1 / 16, 4, 0.5),
                (1 / 27, 3, 1.0), (1 / 8, 2, 0.0)]


def write_spec(out: Path, name: str, evaluation: str, extra: dict, eval_run: str = "zeroshot",
               reverse: bool = False) -> Path:
    """A search recipe over GRID on the tiny recipe."""
    grid = {k: v[::-1] if reverse else v for k, v in GRID.items()}
    spec = {"base": str(ROOT / "recipes/tiny.yaml"),
            "overrides": [f"eval.run={eval_run}", "eval.dense=false", "eval.batch_size=64", f"pruning.ratio={RATIO}"],
            "grid": grid, "evaluation": evaluation, "output_dir": str(out / name), **extra}
    path = out / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def run_search(spec: Path, env: dict, overrides: list[str]) -> float:
    """Run ``gradprune search`` in a fresh process; wall seconds."""
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "gradprune.cli", "search", str(spec), *overrides], env=env,
                       capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"search {spec} failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    return time.perf_counter() - t0


def examples_scored(search_dir: Path) -> int:
    """Examples lm-eval scored over all trials (run.json eval.zeroshot: ``n_new`` where a trial resumed a
    point's earlier rungs, else ``n``; screened trials score none)."""
    total = 0
    for p in (search_dir / "trials").glob("trial_*/run.json"):
        zs = json.loads(p.read_text())["eval"].get("zeroshot", {})
        total += zs["n_new"] if "n_new" in zs else sum(zs.get("n", {}).values())
    return total


def acc_mean_se(row: pd.Series, tasks: list[str]) -> float:
    """Standard error of acc_mean from the per-task stderrs (tasks independent)."""
    return math.sqrt(sum(float(row[f"acc_{t}_stderr"]) ** 2 for t in tasks)) / len(tasks)


def best_setting(df: pd.DataFrame) -> pd.Series:
    """The fully evaluated row with the highest acc_mean (earliest trial on ties)."""
    done = df[df.evaluated.astype(bool) & df.acc_mean.notna()].sort_values(["acc_mean", "trial"],
                                                                            ascending=[False, True])
    return done.iloc[0]


def compare(full: pd.DataFrame, chosen: pd.Series, tasks: list[str]) -> str:
    """Same best as the full search, within its stderr, or not (by the full search's numbers)."""
    ref = best_setting(full)
    keys = list(GRID)
    if all(chosen[k] == ref[k] for k in keys):
        return "same"
    match = full.loc[(full[keys] == chosen[keys].to_numpy()).all(axis=1)].iloc[0]
    gap = ref.acc_mean - match.acc_mean
    se = acc_mean_se(ref, tasks)
    return f"{'within' if gap <= se else 'NOT within'} 1 se ({gap:.4f} below; se {se:.4f})"


def summarise(out: Path, walls: dict[str, float]) -> list[dict]:
    """One result row per search that ran (``walls``)."""
    frames = {m: pd.read_csv(out / m / "search_results.csv") for m in walls}
    tasks = [c[4:] for c in frames["full"].columns if c.startswith("acc_tiny_") and not c.endswith("_stderr")]
    base_n, base_wall = examples_scored(out / "full"), walls["full"]
    base_eval = frames["full"].time_eval.sum()
    rows = []
    for m, df in frames.items():
        n = examples_scored(out / m)
        best = best_setting(df)
        rows.append({"search": m, "trials": len(df), "fully evaluated": int(df.evaluated.astype(bool).sum()),
                     "examples": n, "examples ratio": n / base_n, "wall s": walls[m],
                     "wall ratio": walls[m] / base_wall, "eval s ratio": df.time_eval.sum() / base_eval,
                     "best": ", ".join(f"{k.split('.')[-1]}={best[k]}" for k in GRID),
                     "best acc_mean": best.acc_mean, "vs full": compare(frames["full"], best, tasks)})
    return rows


def markdown(rows: list[dict]) -> str:
    """The result table as Markdown."""
    cols = list(rows[0])
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        cells = [f"{v:.2f}" if isinstance(v, float) and ("ratio" in k or k in ("min", "max")) else f"{v:.1f}" if k == "wall s"
                 else f"{v:.4f}" if isinstance(v, float) else str(v) for k, v in r.items()]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    """Calibrate once, run the three searches, print and write the table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--output_dir", default="results/bench_search")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per search (the cores are shared)")
    ap.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                    help="search override for every search, e.g. grid.calibration.num_samples=[8,16,32] or "
                         "model.name_or_path=DIR (grid keys stay those of GRID)")
    ap.add_argument("--seeds", type=int, default=50, help="subset draws replayed per rule (0: no replay)")
    ap.add_argument("--modes", default=",".join(MODES), help=f"searches to run, of {', '.join(MODES)} (full first)")
    ap.add_argument("--halving", default=None, metavar="MIN_FRACTION,ETA,K",
                    help="halving settings of the halving searches (default 0.125,2,1)")
    ap.add_argument("--task_dir", default=None,
                    help="eval.task_dir for every search, e.g. the larger splits of benchmarks/large_tasks.py")
    ap.add_argument("--per_example", default=None,
                    help="per-example results of an earlier run over the same grid and tasks (skips scoring them "
                         "again; still checked against this run's full search)")
    args = ap.parse_args()
    if args.halving:
        f, eta, k = args.halving.split(",")
        HALVING.update(min_fraction=float(f), reduction_factor=int(eta), k_stderr=float(k))
        ASYNC["halving"].update(HALVING)
    modes = args.modes.split(",")
    if modes[0] != "full" or not set(modes) <= set(MODES):
        raise SystemExit(f"--modes: a list of {', '.join(MODES)} starting with full")
    if args.task_dir:
        args.override.append(f"eval.task_dir={Path(args.task_dir).resolve()}")
    out = Path(args.output_dir).resolve()
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "GRADPRUNE_CACHE": str(out / "gradprune_cache")}
    t_cal = run_search(write_spec(out, "calibrate", "full", {}, eval_run="none"), env, args.override)
    print(f"calibrations: {t_cal:.1f} s (not counted below)", flush=True)
    walls = {}
    for mode in modes:
        evaluation, extra, reverse = MODES[mode]
        shutil.copytree(out / "calibrate/cache/calibration", out / mode / "cache/calibration")
        walls[mode] = run_search(write_spec(out, mode, evaluation, extra, reverse=reverse), env, args.override)
        print(f"{mode}: {walls[mode]:.1f} s", flush=True)
    rows = summarise(out, walls)
    os.environ.update({k: env[k] for k in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "GRADPRUNE_CACHE")})
    import torch

    torch.set_num_threads(args.threads)
    replayed = replay_table(out, rows, args.seeds, args.override, args.per_example) if args.seeds and "halving" in modes else []
    table = markdown(rows) + ("\n\n" + markdown(replayed) if replayed else "")
    (out / "benchmark.md").write_text(table + "\n")
    (out / "benchmark.json").write_text(json.dumps({"searches": rows, "replay": replayed}, indent=1, default=str))
    print(table)


def replay_table(out: Path, rows: list[dict], seeds: int, overrides: list[str], per_example: str | None) -> list[dict]:
    """Score every point on every example, check the replay of the search's own subset draw against
    the real synchronous halving search, and replay REPLAY_RULES over ``seeds`` draws."""
    from search_replay import gather, replay, summary

    if per_example:
        results = {p: {t: {int(i): m for i, m in rows.items()} for t, rows in per.items()}
                   for p, per in json.loads(Path(per_example).read_text()).items()}
    else:
        results = gather(out / "full.yaml", overrides, out / "calibrate/cache/calibration", out / "per_example.json")
    full = pd.read_csv(out / "full" / "search_results.csv")
    keys = list(GRID)
    for _, r in full.iterrows():  # the gathered per-example results are the full search's
        name = ",".join(f"{k.split('.')[-1]}={r[k]}" for k in sorted(keys))
        per = results[name]
        acc = sum(sum(x["acc"] for x in per[t].values()) / len(per[t]) for t in per) / len(per)
        assert abs(acc - r.acc_mean) < 1e-9, (name, acc, r.acc_mean)
    real = next(r for r in rows if r["search"] == "halving")
    mine = replay(results, HALVING["min_fraction"], HALVING["reduction_factor"], HALVING["k_stderr"], seed=0)
    assert mine["examples"] == real["examples"], (mine, real)
    tasks = [c[4:] for c in full.columns if c.startswith("acc_tiny_") and not c.endswith("_stderr")]
    best_se = acc_mean_se(best_setting(full), tasks)
    return summary(results, REPLAY_RULES, seeds, best_se)


if __name__ == "__main__":
    main()
