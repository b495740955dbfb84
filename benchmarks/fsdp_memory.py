"""Host memory per rank under FSDP calibration: 1 process vs N CPU processes (gloo).

Run by hand (defaults: a Mistral-shaped ~125 M-parameter fp32 model, 4 micro-batches of 2 x 64 tokens,
the default estimator and the 6 statistics; about 2 min on a 2-core machine):

    .venv/bin/python benchmarks/fsdp_memory.py
    .venv/bin/python benchmarks/fsdp_memory.py --processes 1 2 4

Every rank builds the same seeded model, then calibrates it (``strategy: auto`` for 1 process,
``fsdp`` with ``devices: N`` otherwise: Lightning re-runs this script for the other ranks). Each rank
reports its resident memory (RSS) after the model is built, at the end of the calibration loop (before
rank 0 gathers the full model), and its peak (``ru_maxrss``). Printed per N: the mean over ranks, and the
ratio of the end-of-loop RSS above the runtime's baseline to the 1-process one (1/N expected for the
weights and the mean-gradient buffer; the activations of one micro-batch are not sharded).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def worker(args: argparse.Namespace) -> None:
    import lightning as L
    import torch

    sys.path.insert(0, str(ROOT))
    from benchmarks.calibration import build_model
    from gradprune import plugins
    from gradprune.calibration import calibrate
    from gradprune.models.adapters import get_adapter
    from gradprune.recipe import TrainerSection

    torch.set_num_threads(1)
    base = rss_mb()
    model = build_model(args, torch.device("cpu"))
    loaded = rss_mb()
    marks: dict[str, float] = {}

    class Mark(L.Callback):
        def on_train_end(self, trainer, module):
            marks["end_of_loop"] = rss_mb()

    n = args.worker
    ids = torch.randint(0, args.vocab, (args.batches * args.batch_size, args.seq_len),
                        generator=torch.Generator().manual_seed(1))
    est = {"taylor": plugins.IMPORTANCE.build("taylor", {})}
    cols = [plugins.COLLECTORS.build(c) for c in ("grad_norm", "grad_mean", "grad_std", "grad_max",
                                                  "grad_var", "grad_snr")]
    cfg = TrainerSection(accelerator="cpu", devices=n, strategy="fsdp" if n > 1 else "auto", precision="32-true")
    res = calibrate(model, get_adapter(model).layers(model), ids, args.batch_size, est, cols, cfg, progress=Mark())
    out = {"rank": res.rank, "base": base, "loaded": loaded, "end_of_loop": marks["end_of_loop"],
           "peak": peak_mb(), "params": sum(p.numel() for p in get_adapter(model).layers(model)[0].weights().values())}
    Path(args.out, f"n{n}_rank{res.rank}.json").write_text(json.dumps(out))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    p.add_argument("--hidden", type=int, default=768)
    p.add_argument("--intermediate", type=int, default=3072)
    p.add_argument("--layers", type=int, default=12)
    p.add_argument("--heads", type=int, default=12)
    p.add_argument("--kv-heads", type=int, default=4)
    p.add_argument("--vocab", type=int, default=32000)
    p.add_argument("--seq-len", type=int, default=64)
    p.add_argument("--batches", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=2)
    p.add_argument("--dtype", default="float32")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None)
    p.add_argument("--worker", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        worker(args)
        return
    import tempfile

    out = Path(args.out or tempfile.mkdtemp(prefix="fsdp_memory_"))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore", "PYTHONPATH": str(ROOT)}
    rows = {}
    for n in args.processes:
        cmd = [sys.executable, __file__, *sys.argv[1:], "--out", str(out), "--worker", str(n)]
        subprocess.run(cmd, check=True, env=env, cwd=ROOT, stdout=subprocess.DEVNULL)
        ranks = [json.loads((out / f"n{n}_rank{r}.json").read_text()) for r in range(n)]
        rows[n] = {k: sum(r[k] for r in ranks) / n for k in ("base", "loaded", "end_of_loop", "peak")}
    print(f"{'processes':>9} {'model MB':>9} {'end-of-loop RSS':>16} {'peak RSS':>9} {'loop above base':>16} ratio")
    first = rows[args.processes[0]]
    ref = first["end_of_loop"] - first["base"]
    for n, r in rows.items():
        above = r["end_of_loop"] - r["base"]
        print(f"{n:>9} {r['loaded'] - r['base']:>9.0f} {r['end_of_loop']:>16.0f} {r['peak']:>9.0f} {above:>16.0f} "
              f"ratio {above / ref:.2f} (1/N = {1 / n:.2f})")


if __name__ == "__main__":
    main()
