"""Time of ``gradprune analyze`` on a synthetic search CSV (default 1,000 rows × 20 numeric columns).

Run by hand:

    .venv/bin/python benchmarks/analyze.py                  # 1,000 rows, 20 numeric columns
    .venv/bin/python benchmarks/analyze.py --replicates 5   # the same rows as 200 configs × 5 seeds

Runs the real console command in a fresh process (interpreter start, imports, bootstrap, predictors,
figures and the atomic writes included) and prints wall time and the CPU time of that process; on a
shared machine the CPU time is the steadier number.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd


def synthetic(rows: int, columns: int, replicates: int, seed: int) -> pd.DataFrame:
    """``columns`` numeric columns: acc_mean plus features, two of them related to it."""
    rng = np.random.default_rng(seed)
    configs = max(1, rows // replicates)
    cid = np.repeat(np.arange(configs), replicates)[:rows]
    seq = rng.choice([16, 32, 64, 128, 256], configs)[cid]
    g = rng.uniform(2, 40, rows)
    df = pd.DataFrame({"trial": np.arange(rows), "success": True, "status": "complete",
                       "taylor_seq_len": seq, "grad_norm_ratio": g,
                       "acc_mean": 0.7 - 0.004 * g - 0.0002 * seq + rng.normal(0, 0.01, rows)})
    for k in range(columns - 3):
        df[f"stat_{k}"] = rng.normal(size=rows)
    if replicates > 1:
        df["config_id"], df["seed"] = cid, np.tile(np.arange(replicates), configs)[:rows]
    return df


def main() -> None:
    """Write the CSV, run ``gradprune analyze`` on it, print the times."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1000)
    ap.add_argument("--columns", type=int, default=20, help="numeric columns, target included")
    ap.add_argument("--replicates", type=int, default=1, help="rows per config (1: no config_id column)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        csv = Path(tmp) / "search_results.csv"
        synthetic(args.rows, args.columns, args.replicates, args.seed).to_csv(csv, index=False)
        gradprune = Path(sys.executable).with_name("gradprune")
        start = time.perf_counter()
        subprocess.run([str(gradprune), "analyze", str(csv), "--output_dir", str(Path(tmp) / "out")],
                       check=True, stdout=subprocess.DEVNULL)
        wall = time.perf_counter() - start
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        outputs = sorted(p.name for p in (Path(tmp) / "out").iterdir())
    print(f"gradprune analyze: {args.rows} rows x {args.columns} numeric columns"
          f"{f', {args.replicates} replicates per config' if args.replicates > 1 else ''}: "
          f"{wall:.2f} s wall, {usage.ru_utime + usage.ru_stime:.2f} s CPU ({len(outputs)} files; target < 10 s)")


if __name__ == "__main__":
    main()
