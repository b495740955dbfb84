"""Host memory per rank under FSDP calibration: 1 process vs N CPU processes (gloo), as `gradprune run` loads.

Run by hand (defaults: a Mistral-shaped ~125 M-parameter fp32 model, 4 micro-batches of 2 x 64 tokens,
the default estimator and the 6 statistics; about 3 min on a 2-core machine):

    .venv/bin/python benchmarks/fsdp_memory.py
    .venv/bin/python benchmarks/fsdp_memory.py --processes 1 2 4

The seeded model is saved once as a safetensors checkpoint. One process loads it whole, as a single-device
run does (``load_model``); N processes (``strategy: fsdp``, ``devices: N``; Lightning re-runs this script
for the other ranks) each build it on the meta device and read only their own shards once it is sharded
(``load_empty``, as ``gradprune run`` does under FSDP). Each rank reports its resident memory (RSS) after
loading, at the end of the calibration loop, its peak up to then (``ru_maxrss``: loading and calibration)
and its final peak (rank 0 then gathers the full model for surgery and evaluation). Printed per N: the
mean of the calibration peaks above the runtime's baseline, their ratio to the 1-process one (the
weights and the mean-gradient buffer shard as 1/N; one micro-batch's activations and the all-gathered
layer do not), and rank 0's final peak.
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
    from gradprune import plugins
    from gradprune.calibration import calibrate
    from gradprune.models.adapters import get_adapter
    from gradprune.models.loading import load_model
    from gradprune.models.shard_loading import load_empty
    from gradprune.recipe import ModelSection, TrainerSection

    torch.set_num_threads(1)
    n = args.worker
    section = ModelSection(name_or_path=str(Path(args.out, "checkpoint")), dtype=args.dtype)
    base = rss_mb()
    if n > 1:
        model, _, shards_from, why = load_empty(section)
        assert shards_from is not None, why
    else:
        (model, _), shards_from = load_model(section), None
    loaded = rss_mb()
    marks: dict[str, float] = {}

    class Mark(L.Callback):
        def on_train_end(self, trainer, module):
            marks["end_of_loop"], marks["calibration_peak"] = rss_mb(), peak_mb()

    ids = torch.randint(0, args.vocab, (args.batches * args.batch_size, args.seq_len),
                        generator=torch.Generator().manual_seed(1))
    est = {"taylor": plugins.IMPORTANCE.build("taylor", {})}
    cols = [plugins.COLLECTORS.build(c) for c in ("grad_norm", "grad_mean", "grad_std", "grad_max",
                                                  "grad_var", "grad_snr")]
    cfg = TrainerSection(accelerator="cpu", devices=n, strategy="fsdp" if n > 1 else "auto", precision="32-true")
    res = calibrate(model, get_adapter(model).layers(model), ids, args.batch_size, est, cols, cfg, progress=Mark(),
                    shards_from=shards_from)
    out = {"rank": res.rank, "base": base, "loaded": loaded, **marks, "peak": peak_mb()}
    Path(args.out, f"n{n}_rank{res.rank}.json").write_text(json.dumps(out))


def save_checkpoint(args: argparse.Namespace, out: Path) -> int:
    """The seeded model as a safetensors checkpoint (with the embedded model's tokenizer files)."""
    import shutil

    import torch

    sys.path.insert(0, str(ROOT))
    from benchmarks.calibration import build_model
    from gradprune.assets import MODEL_DIR

    model = build_model(args, torch.device("cpu"))
    model.save_pretrained(out / "checkpoint")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(Path(MODEL_DIR, name), out / "checkpoint" / name)
    return sum(p.numel() for p in model.parameters())


def arguments(description: str) -> argparse.ArgumentParser:
    """The seeded model's shape, the calibration data, the output folder and the worker's flag (shared
    with ``benchmarks/fsdp_traffic.py``, which sets its own defaults)."""
    p = argparse.ArgumentParser(description=description)
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
    return p


def main() -> None:
    p = arguments(__doc__.splitlines()[0])
    p.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    args = p.parse_args()
    if args.worker:
        worker(args)
        return
    import tempfile

    out = Path(args.out or tempfile.mkdtemp(prefix="fsdp_memory_"))
    n_params = save_checkpoint(args, out)
    # a fixed mmap threshold: glibc otherwise raises it as large blocks are freed and then keeps the freed
    # all-gather buffers of every step in its heap, which RSS counts (measured: 1,084 instead of 540 MB
    # at the end of the loop for 2 ranks); the same setting for every N
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore", "PYTHONPATH": str(ROOT),
           "HF_HUB_OFFLINE": "1", "MALLOC_MMAP_THRESHOLD_": os.environ.get("MALLOC_MMAP_THRESHOLD_", "131072")}
    rows = {}
    for n in args.processes:
        cmd = [sys.executable, __file__, *sys.argv[1:], "--out", str(out), "--worker", str(n)]
        subprocess.run(cmd, check=True, env=env, cwd=ROOT, stdout=subprocess.DEVNULL)
        ranks = [json.loads((out / f"n{n}_rank{r}.json").read_text()) for r in range(n)]
        rows[n] = {k: sum(r[k] - (r["base"] if k != "base" else 0) for r in ranks) / n
                   for k in ("base", "loaded", "end_of_loop", "calibration_peak")}
        rows[n]["rank0_final_peak"] = ranks[0]["peak"] - ranks[0]["base"]
    print(f"{n_params / 1e6:.0f} M parameters, {args.dtype}: {n_params * 4 / 2**20:.0f} MB in fp32; "
          "MB above each process's baseline (mean over ranks)")
    print(f"{'processes':>9} {'after load':>10} {'end of loop':>11} {'calib. peak':>11} {'ratio':>6} "
          f"{'1/N':>5} {'rank 0 final':>12}")
    ref = rows[args.processes[0]]["calibration_peak"]
    for n, r in rows.items():
        print(f"{n:>9} {r['loaded']:>10.0f} {r['end_of_loop']:>11.0f} {r['calibration_peak']:>11.0f} "
              f"{r['calibration_peak'] / ref:>6.2f} {1 / n:>5.2f} {r['rank0_final_peak']:>12.0f}")


if __name__ == "__main__":
    main()
