"""Bytes each rank sends through torch.distributed collectives during FSDP calibration (gloo, N CPU processes).

Run by hand (defaults: a Mistral-shaped ~24 M-parameter fp32 model, 2 processes, 4 micro-batches of 2 x 64
tokens, the default estimator and the 6 statistics; then ``taylor`` at ``granularity: element``; about 1.5 min
on a 2-core machine):

    .venv/bin/python benchmarks/fsdp_traffic.py
    .venv/bin/python benchmarks/fsdp_traffic.py --processes 4 --configs default

The checkpoint is the one :mod:`benchmarks.fsdp_memory` saves (``save_checkpoint``); each rank builds the
model on the meta device and reads its shards, as ``gradprune run`` does under FSDP. Inside each rank the
collectives of ``torch.distributed`` (the names FSDP2 looks up at call time, ``dist.all_gather_single`` and
``dist.reduce_scatter_single``, their deprecated aliases, and the others) are wrapped to tally the payload
each call hands over: its input tensor(s), numel x element size (``reduce``/``broadcast``: the tensor each
rank passes in). This is payload, not wire bytes: a ring all-reduce puts about 2(N-1)/N of it on the wire,
a reduce-scatter or all-gather (N-1)/N of its full buffer. A call made inside another (``all_gather_object``
over ``all_gather``) counts once, as the outer op, with the inner tensors' bytes.

Each call is put in a category by the innermost caller outside torch.distributed's own plumbing: FSDP
(``torch/distributed/fsdp``: parameter all-gathers, gradient reduce-scatters), gradprune (the hooks'
G / F traffic during a step, the plugins' state reductions at the end), or Lightning; and in a phase by
a Lightning callback: setup (before the first step), each step (one micro-batch per rank), or the end
(the reductions after the loop). The gather of the full model on rank 0 after calibration goes through
DTensor's functional collectives, which are not wrapped: it is not counted (nor is anything else that
would take that path; FSDP2's calibration loop does not). Printed: bytes per
rank per micro-batch by category and op (mean over ranks and steps), the end-of-loop bytes per rank, and a
prediction for Mistral-7B shapes (bytes per parameter measured here times Mistral-7B's parameter counts).
"""

from __future__ import annotations

import argparse
import functools
import inspect
import json
import os
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: each wrapped collective and the argument(s) whose tensors it hands over
PAYLOAD = {
    "all_gather_single": "input_tensor", "all_gather_into_tensor": "input_tensor", "_all_gather_base": "input_tensor",
    "reduce_scatter_single": "input", "reduce_scatter_tensor": "input", "_reduce_scatter_base": "input",
    "all_reduce": "tensor", "reduce": "tensor", "broadcast": "tensor", "all_gather": "tensor",
    "reduce_scatter": "input_list", "gather": "tensor", "scatter": "scatter_list", "all_to_all_single": "input",
    "all_to_all": "input_tensor_list", "all_gather_object": None, "broadcast_object_list": None,
    "gather_object": None, "scatter_object_list": None, "barrier": None,
}
#: Mistral-7B: 32 layers of q, o (4096 x 4096), k, v (1024 x 4096), gate, up, down (4096 x 14336), and
#: untied 32000 x 4096 embeddings; norms are negligible
MISTRAL_PRUNABLE = 32 * (2 * 4096 * 4096 + 2 * 1024 * 4096 + 3 * 4096 * 14336)
MISTRAL_TOTAL = MISTRAL_PRUNABLE + 2 * 32000 * 4096


def _nbytes(value) -> int:
    import torch

    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, (list, tuple)):
        return sum(_nbytes(v) for v in value)
    return 0


class Tally:
    """Payload bytes and calls by (phase, category, op) in this process."""

    def __init__(self) -> None:
        self.phase = "setup"
        self.counts: dict[tuple[str, str, str], list[int]] = defaultdict(lambda: [0, 0])
        self._depth, self._inner = 0, 0
        self._gradprune = str(ROOT / "gradprune")

    def category(self) -> str:
        """Who called: the innermost frame in FSDP, gradprune or Lightning (the gather of the full model
        after calibration apart)."""
        frame, found = sys._getframe(2), "other"
        while frame is not None:
            name = frame.f_code.co_filename
            if found == "other":
                if "/torch/distributed/fsdp/" in name:
                    found = "fsdp"
                elif name.startswith(self._gradprune):
                    found = f"gradprune:{Path(name).stem}.{frame.f_code.co_name}"
                elif "/lightning/" in name:
                    found = "lightning"
            if frame.f_code.co_name in ("gather_full_model", "_gather_for_scoring"):
                return "gather"
            frame = frame.f_back
        return found

    def wrap(self, name: str, fn):
        """``fn`` (a torch.distributed collective) counting its payload."""
        sig, key = inspect.signature(fn), PAYLOAD[name]

        @functools.wraps(fn)
        def counted(*args, **kwargs):
            own = _nbytes(sig.bind_partial(*args, **kwargs).arguments.get(key)) if key else 0
            if self._depth:
                self._inner += own
                return fn(*args, **kwargs)
            self._depth, self._inner = 1, 0
            cat = self.category()
            try:
                return fn(*args, **kwargs)
            finally:
                self._depth = 0
                row = self.counts[(self.phase, cat, name)]
                row[0] += self._inner or own
                row[1] += 1
        return counted

    def install(self) -> None:
        """Wrap every collective where it is looked up: ``torch.distributed`` (FSDP2's ``dist.*``) and
        ``distributed_c10d`` (the deprecated aliases call through its globals)."""
        import torch.distributed as dist
        import torch.distributed.distributed_c10d as c10d

        for name in PAYLOAD:
            original = getattr(c10d, name, None)
            if original is None:
                continue
            counted = self.wrap(name, original)
            setattr(c10d, name, counted)
            if getattr(dist, name, None) is original:
                setattr(dist, name, counted)


def worker(args: argparse.Namespace) -> None:
    import lightning as L
    import torch

    sys.path.insert(0, str(ROOT))
    from gradprune import plugins
    from gradprune.calibration import calibrate
    from gradprune.models.adapters import get_adapter
    from gradprune.models.shard_loading import load_empty
    from gradprune.recipe import ModelSection, TrainerSection

    torch.set_num_threads(1)
    tally = Tally()
    tally.install()
    section = ModelSection(name_or_path=str(Path(args.out, "checkpoint")), dtype=args.dtype)
    model, _, shards_from, why = load_empty(section)
    assert shards_from is not None, why

    class Phase(L.Callback):
        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            tally.phase = f"step{batch_idx}"

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            tally.phase = "between"

        def on_train_end(self, trainer, module):
            tally.phase = "end"

    ids = torch.randint(0, args.vocab, (args.batches * args.batch_size, args.seq_len),
                        generator=torch.Generator().manual_seed(1))
    params = {"granularity": "element"} if args.config == "element" else {}
    est = {"taylor": plugins.IMPORTANCE.build("taylor", params)}
    cols = [plugins.COLLECTORS.build(c) for c in ("grad_norm", "grad_mean", "grad_std", "grad_max",
                                                  "grad_var", "grad_snr")]
    cfg = TrainerSection(accelerator="cpu", devices=args.worker, strategy="fsdp", precision="32-true")
    # the keyword for the shards' checkpoint was ``weights`` in earlier versions
    where = "shards_from" if "shards_from" in inspect.signature(calibrate).parameters else "weights"
    rank = int(os.environ.get("LOCAL_RANK", 0))
    try:
        res = calibrate(model, get_adapter(model).layers(model), ids, args.batch_size, est, cols, cfg,
                        progress=Phase(), **{where: shards_from})
        rank, out = res.rank, {"counts": [[*k, *v] for k, v in tally.counts.items()]}
    except Exception as e:  # an earlier version refuses some configurations: recorded as such
        out = {"refused": f"{type(e).__name__}: {e}"}
    Path(args.out, f"{args.config}_rank{rank}.json").write_text(json.dumps(out))


def summarise(ranks: list[dict], steps: int) -> tuple[dict, dict]:
    """(per micro-batch, at the end): mean bytes per rank by (category, op); steps averaged too."""
    per_step: dict = defaultdict(float)
    end: dict = defaultdict(float)
    for r in ranks:
        for phase, cat, op, nbytes, _calls in r["counts"]:
            if phase.startswith("step"):
                per_step[(cat, op)] += nbytes / (len(ranks) * steps)
            elif phase in ("end", "between") or cat == "gather":
                end[(cat, op)] += nbytes / len(ranks)
    return dict(per_step), dict(end)


def kind(cat: str, phase: str) -> str:
    """The report's category: (a) FSDP's own, (b) gradprune's for the plugins, or another caller."""
    if cat == "fsdp":
        return "(a) FSDP"
    if cat.startswith("gradprune"):
        return "(b) hooks G/F" if phase == "step" else "(b) plugin state"
    return cat


def report(ranks: list[dict], steps: int, n_total: int, n_prunable: int) -> None:
    """One line per (phase, category, op): MB per rank, bytes per parameter, the Mistral-7B prediction."""
    per_step, end = summarise(ranks, steps)
    print(f"  {'phase':<8} {'category':<16} {'op':<22} {'MiB/rank':>8} {'B/param':>8} {'Mistral-7B GiB':>14}")
    for phase, table in (("step", per_step), ("end", end)):
        by_kind: dict = defaultdict(float)
        for (cat, op), nbytes in table.items():
            by_kind[(kind(cat, phase), op)] += nbytes
        for (k, op), nbytes in sorted(by_kind.items()):
            # all-gathers move every parameter (per-parameter basis: all, "*"); the rest the prunable ones
            every = "all_gather" in op and k == "(a) FSDP"
            count, mistral = (n_total, MISTRAL_TOTAL) if every else (n_prunable, MISTRAL_PRUNABLE)
            print(f"  {phase:<8} {k:<16} {op:<22} {nbytes / 2**20:>8.2f} {nbytes / count:>7.3f}{'*' if every else ' '}"
                  f" {nbytes / count * mistral / 2**30:>14.2f}")


def main() -> None:
    sys.path.insert(0, str(ROOT))
    from benchmarks.fsdp_memory import arguments, save_checkpoint

    p = arguments(__doc__.splitlines()[0])
    p.set_defaults(hidden=256, intermediate=1024, layers=8, heads=8, kv_heads=4)
    p.add_argument("--processes", type=int, default=2)
    p.add_argument("--configs", nargs="+", default=["default", "element"], choices=["default", "element"])
    p.add_argument("--config", default="default", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        worker(args)
        return
    import tempfile

    out = Path(args.out or tempfile.mkdtemp(prefix="fsdp_traffic_"))
    n_total = save_checkpoint(args, out)
    h, i, kv = args.hidden, args.intermediate, args.hidden * args.kv_heads // args.heads
    n_prunable = args.layers * (2 * h * h + 2 * kv * h + 3 * h * i)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore", "PYTHONPATH": str(ROOT),
           "HF_HUB_OFFLINE": "1"}
    n, steps = args.processes, -(-args.batches // args.processes)
    print(f"{n_total / 1e6:.1f} M parameters ({n_prunable / 1e6:.1f} M prunable), {args.dtype}, {n} ranks "
          f"(gloo), {args.batches} micro-batches of {args.batch_size} x {args.seq_len}: payload bytes per rank")
    for config in args.configs:
        cmd = [sys.executable, __file__, *sys.argv[1:], "--out", str(out), "--worker", str(n), "--config", config]
        subprocess.run(cmd, check=True, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, timeout=600)
        first = json.loads((out / f"{config}_rank0.json").read_text())
        if "refused" in first:  # refused before the other ranks started
            print(f"\n{config}: refused ({first['refused'][:150]}...)")
            continue
        ranks = [first, *(json.loads((out / f"{config}_rank{r}.json").read_text()) for r in range(1, n))]
        print(f"\n{config}: per micro-batch (step) and once after the loop (end)")
        report(ranks, steps, n_total, n_prunable)
    print(f"\nB/param: bytes per prunable parameter (* per parameter); Mistral-7B (prediction): B/param x "
          f"{MISTRAL_PRUNABLE / 1e9:.2f} G prunable (* {MISTRAL_TOTAL / 1e9:.2f} G), same dtype and {n} ranks")

if __name__ == "__main__":
    main()
