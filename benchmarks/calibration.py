"""Calibration cost: gradprune vs a bare forward+backward loop vs an LLM-Pruner-style baseline.

Run by hand (defaults: a Mistral-shaped 125 M-parameter model, 4 micro-batches of 8 x 64 tokens,
fp32 on CPU, one thread; 4-5 min on a 2-core machine shared with other work):

    .venv/bin/python benchmarks/calibration.py
    .venv/bin/python benchmarks/calibration.py --rounds 2 --threads 0     # torch's threads, twice
    .venv/bin/python benchmarks/calibration.py --batches 16 --batch-size 8 --seq-len 128
    .venv/bin/python benchmarks/calibration.py --device cuda --precision bf16-true --dtype bfloat16

Every variant runs on the same model and the same token batches:

a. ``bare``: a plain loop, forward + backward per micro-batch; only the prunable weights require a
   gradient (as in gradprune) and a post-accumulate hook frees each gradient at once;
b. ``gradprune.calibration.calibrate`` (Lightning ``fit``) with the 4 stat collectors and one
   estimator each: taylor (first order, vector), taylor element, fisher (second order), taylor_mix,
   activation;
c. ``llm_pruner``: what LLM-Pruner's Taylor pruning keeps in memory: every parameter requires a
   gradient, ``.grad`` accumulates across micro-batches (first-order term) and a full-size fp32
   squared-gradient buffer per parameter collects g² of each micro-batch (second-order term; with
   ``--baseline-per-sample`` one backward per sample, as LLM-Pruner does).

Time: wall clock (and CPU time) of each variant in this process; every gradprune run sits between two
bare runs and its ratio is to their mean, so slow drifts of the machine's load cancel. For
``calibrate`` the whole call is timed, Trainer construction and final scoring included, and the
Lightning loop alone (first batch start to last batch end) is reported beside it.

Memory: a fresh process repeats every variant on ``--memory-batches`` micro-batches and records its
peak above the memory held before it (the weights, the runtime), so it is what the calibration itself
needs: on CUDA from the allocator's peak statistics, on Linux CPU from the RSS high-water mark, reset
before every variant (``/proc/self/clear_refs``). That process serves allocations >= 64 KiB by mmap, so
freed tensors leave the RSS at once (with glibc's adaptive heap the peaks of identical runs move by
5-10 %); the timed runs keep the default allocator. The total-peak ratios are printed too.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import json
import os
import re
import statistics
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass, field

import lightning as L
import torch

ESTIMATORS: dict[str, tuple[str, dict]] = {
    "taylor": ("taylor", {}),
    "taylor_element": ("taylor", {"granularity": "element"}),
    "fisher": ("fisher", {}),
    "taylor_mix": ("taylor_mix", {}),
    "activation": ("activation", {}),
    # not in the default run: one backward per sample (the exact per-sample Fisher)
    "fisher_per_sample": ("fisher", {"per_sample": True}),
}
DEFAULT_ESTIMATORS = ["taylor", "taylor_element", "fisher", "taylor_mix", "activation"]
# group-level estimators: one accumulator per group, never a parameter-sized buffer
STREAMING = ("taylor", "fisher", "activation", "fisher_per_sample")
COLLECTORS = ("grad_norm", "grad_mean", "grad_std", "grad_max")


# --------------------------------------------------------------------------- model and data


def build_model(args: argparse.Namespace, device: torch.device) -> torch.nn.Module:
    """A Mistral-shaped model from a config, with seeded random weights (built on meta: fast)."""
    from transformers import MistralConfig, MistralForCausalLM

    from gradprune.models.shard_loading import params_on_meta

    config = MistralConfig(
        vocab_size=args.vocab, hidden_size=args.hidden, intermediate_size=args.intermediate,
        num_hidden_layers=args.layers, num_attention_heads=args.heads, num_key_value_heads=args.kv_heads,
        max_position_embeddings=max(2048, args.seq_len), tie_word_embeddings=False,
    )
    with params_on_meta():
        model = MistralForCausalLM(config)
    gen = torch.Generator().manual_seed(args.seed)
    dtype = getattr(torch, args.dtype)
    weights = {}
    for name, p in model.named_parameters():
        t = torch.ones(p.shape) if name.endswith("norm.weight") else torch.randn(p.shape, generator=gen) * 0.02
        weights[name] = t.to(device=device, dtype=dtype)
    model.load_state_dict(weights, assign=True)
    return model.to(device).eval()


def token_batches(args: argparse.Namespace, device: torch.device) -> torch.Tensor:
    """``batches * batch_size`` random windows of ``seq_len`` tokens (seeded)."""
    gen = torch.Generator().manual_seed(args.seed + 1)
    ids = torch.randint(0, args.vocab, (args.batches * args.batch_size, args.seq_len), generator=gen)
    return ids.to(device)


# --------------------------------------------------------------------------- peak memory


class PeakMemory:
    """Peak memory of a region: CUDA allocator statistics, or the RSS high-water mark on Linux."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self._libc = None
        if not self.cuda:
            if not os.access("/proc/self/clear_refs", os.W_OK):
                raise SystemExit("peak memory on CPU needs Linux /proc/self/clear_refs (or run with --device cuda)")
            with contextlib.suppress(OSError):
                self._libc = ctypes.CDLL("libc.so.6")

    def _status(self, key: str) -> int:
        with open("/proc/self/status") as f:
            return int(re.search(rf"{key}:\s+(\d+) kB", f.read()).group(1)) * 1024

    def current(self) -> int:
        """Bytes in use now."""
        if self.cuda:
            return torch.cuda.memory_allocated()
        return self._status("VmRSS")

    def reset(self) -> int:
        """Start a region: release freed memory, reset the peak; returns the bytes in use now."""
        gc.collect()
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        else:
            if self._libc is not None:
                self._libc.malloc_trim(0)  # freed heap pages would otherwise be reused without counting
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # resets VmHWM to the current RSS (Linux >= 4.0)
        return self.current()

    def peak(self) -> int:
        """Highest bytes in use since ``reset``."""
        if self.cuda:
            torch.cuda.synchronize()
            return torch.cuda.max_memory_allocated()
        return self._status("VmHWM")


# --------------------------------------------------------------------------- the variants


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def bare_loop(model, layers, ids: torch.Tensor, batch_size: int, device: torch.device) -> dict:
    """(a) forward + backward per micro-batch; gradients of the prunable weights only, freed at once."""
    flags = {p: p.requires_grad for p in model.parameters()}
    for p in model.parameters():
        p.requires_grad_(False)
    with contextlib.ExitStack() as stack:
        stack.callback(lambda: [p.requires_grad_(f) for p, f in flags.items()])
        for lm in layers:
            for p in lm.weights().values():
                p.requires_grad_(True)
                stack.enter_context(p.register_post_accumulate_grad_hook(_free_grad))
        _sync(device)
        t0 = time.perf_counter()
        for batch in ids.split(batch_size):
            loss = model(input_ids=batch, labels=batch).loss
            loss.backward()
            assert torch.isfinite(loss.detach()).item()
            del loss  # the spent graph's root pins activations until the next forward otherwise
        _sync(device)
        return {"seconds": time.perf_counter() - t0}


def _free_grad(p: torch.Tensor) -> None:
    p.grad = None


class LoopTimer(L.Callback):
    """Wall time from the first batch's start to the last batch's end (Trainer set-up excluded)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.start: float | None = None
        self.end: float | None = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self.start is None:
            _sync(self.device)
            self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        _sync(self.device)
        self.end = time.perf_counter()


def gradprune_run(model, layers, ids: torch.Tensor, batch_size: int, estimator: str, trainer_cfg,
                  device: torch.device) -> dict:
    """(b) ``calibrate`` with the 4 collectors and one estimator; whole call and loop timed."""
    from gradprune import plugins
    from gradprune.calibration import calibrate

    name, params = ESTIMATORS[estimator]
    est = plugins.IMPORTANCE.build(name, params)
    cols = [plugins.COLLECTORS.build(c) for c in COLLECTORS]
    timer = LoopTimer(device)
    _sync(device)
    with hook_timer(device) as in_hooks:
        t0 = time.perf_counter()
        res = calibrate(model, layers, ids, batch_size, {estimator: est}, cols, trainer_cfg, progress=timer)
        _sync(device)
        total = time.perf_counter() - t0
    return {"seconds": total, "loop_seconds": timer.end - timer.start, "hook_seconds": in_hooks[0],
            "scores": res.scores[estimator]}


@contextlib.contextmanager
def hook_timer(device: torch.device):
    """Time spent in gradprune's hook bodies (gradients, activations, end of micro-batch), measured directly.

    The b/a ratio is a difference of two noisy runs; this is the extra work itself. On CUDA it syncs
    around every hook, so it slows the run down: read it, not the run's time, there.
    """
    from gradprune.calibration import HookDispatcher

    spent = [0.0]
    originals = {n: getattr(HookDispatcher, n) for n in ("on_grad", "on_input", "end_batch")}

    def timed(fn):
        def wrapper(self, *args):
            _sync(device)
            t = time.perf_counter()
            try:
                return fn(self, *args)
            finally:
                _sync(device)
                spent[0] += time.perf_counter() - t

        return wrapper

    for n, fn in originals.items():
        setattr(HookDispatcher, n, timed(fn))
    try:
        yield spent
    finally:
        for n, fn in originals.items():
            setattr(HookDispatcher, n, fn)


def llm_pruner_baseline(model, layers, ids: torch.Tensor, batch_size: int, per_sample: bool,
                        device: torch.device) -> dict:
    """(c) LLM-Pruner-style: ``.grad`` of every parameter kept across batches + a full-size g² buffer.

    One backward per micro-batch (per sample with ``per_sample``); a tensor hook adds each backward's
    gradient squared to the parameter's fp32 ``acc_grad`` before autograd accumulates it into ``.grad``.
    Scores (first order |Σ w·G|, second order Σ w²·F per group) are computed at the end, as there.
    """
    from gradprune.importance.base import kind_of
    from gradprune.models.adapters import group_sum

    params = list(model.parameters())
    flags = {p: p.requires_grad for p in params}
    acc_sq: dict[torch.Tensor, torch.Tensor] = {}

    def square_into(p):
        def hook(g):
            buf = acc_sq.get(p)
            if buf is None:
                acc_sq[p] = buf = torch.zeros(p.shape, dtype=torch.float32, device=p.device)
            buf.addcmul_(g, g)

        return hook

    with contextlib.ExitStack() as stack:
        stack.callback(lambda: [p.requires_grad_(f) for p, f in flags.items()])
        for p in params:
            p.requires_grad_(True)  # LLM-Pruner sets requires_grad on every parameter
            stack.enter_context(p.register_hook(square_into(p)))
        _sync(device)
        t0 = time.perf_counter()
        n = 0
        for batch in ids.split(batch_size):
            for chunk in batch.split(1) if per_sample else (batch,):
                model(input_ids=chunk, labels=chunk).loss.backward()
                n += 1
        scores: dict[tuple[int, str], torch.Tensor] = {}
        for lm in layers:
            for role, p in lm.weights().items():
                w = p.detach().float()
                key = (lm.index, kind_of(role))
                first = group_sum(w * p.grad.float() / n, role, lm)
                second = group_sum(0.5 * w.square() * acc_sq[p] / n, role, lm)
                scores[key] = scores.get(key, 0) + torch.stack([first, second])
        _sync(device)
        seconds = time.perf_counter() - t0
        for p in params:
            p.grad = None
    acc_sq.clear()
    return {"seconds": seconds, "backwards": n}


# --------------------------------------------------------------------------- driver


@dataclass
class Measured:
    """Timed runs of one variant, its ratios to the neighbouring bare runs, and its peak memory."""

    seconds: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    loop: list[float] = field(default_factory=list)
    hooks: list[float] = field(default_factory=list)
    ratios: dict[str, list[float]] = field(default_factory=dict)
    over: int = 0
    total: int = 0

    def mean(self, attr: str) -> float:
        values = getattr(self, attr)
        return statistics.mean(values) if values else float("nan")

    def ratio(self, key: str) -> float:
        return statistics.mean(self.ratios[key])


def timed(name: str, fn, out: dict[str, Measured]) -> dict:
    """Run ``fn`` once and record its wall, CPU and loop seconds under ``name``."""
    gc.collect()
    cpu0 = time.process_time()
    r = fn()
    r["cpu"] = time.process_time() - cpu0
    m = out.setdefault(name, Measured())
    m.seconds.append(r["seconds"])
    m.cpu.append(r["cpu"])
    if "loop_seconds" in r:
        m.loop.append(r["loop_seconds"])
        m.hooks.append(r["hook_seconds"])
    loop = f", loop {r['loop_seconds']:.2f} s (hooks {r['hook_seconds']:.2f} s)" if "loop_seconds" in r else ""
    print(f"  {name:<18} {r['seconds']:7.2f} s{loop}, cpu {r['cpu']:.2f} s", flush=True)
    return r


def pair(b: dict, before: dict, after: dict, m: Measured) -> None:
    """Time ratios of a gradprune run to the mean of the bare runs just before and after it."""
    wall = (before["seconds"] + after["seconds"]) / 2
    cpu = (before["cpu"] + after["cpu"]) / 2
    for key, value in (("time", b["seconds"] / wall), ("loop", b["loop_seconds"] / wall), ("cpu", b["cpu"] / cpu)):
        m.ratios.setdefault(key, []).append(value)


def peak(name: str, fn, mem: PeakMemory, out: dict[str, Measured]) -> None:
    """Run ``fn`` once and record its peak memory above what was held before it, and the total peak."""
    before = mem.reset()
    fn()
    top = mem.peak()
    m = out.setdefault(name, Measured())
    m.over, m.total = max(m.over, top - before), max(m.total, top)  # bare twice: the larger peak counts
    print(f"  {name:<18} peak +{(top - before) / 2**20:8.1f} MiB (total {top / 2**20:8.1f} MiB)", flush=True)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--layers", type=int, default=12)
    p.add_argument("--hidden", type=int, default=768)
    p.add_argument("--intermediate", type=int, default=2048)
    p.add_argument("--heads", type=int, default=12)
    p.add_argument("--kv-heads", type=int, default=4)
    p.add_argument("--vocab", type=int, default=32000)
    p.add_argument("--batches", type=int, default=4, help="micro-batches per timed variant")
    p.add_argument("--memory-batches", type=int, default=2,
                   help="micro-batches per memory run (the peak is reached in the first two)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--seq-len", type=int, default=64)
    p.add_argument("--rounds", type=int, default=1, help="repeat the timed variants (ratios are averaged)")
    p.add_argument("--estimators", nargs="+", default=DEFAULT_ESTIMATORS, choices=list(ESTIMATORS))
    p.add_argument("--baseline-per-sample", action="store_true",
                   help="LLM-Pruner baseline with one backward per sample (slow: batch-size x backward passes)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    p.add_argument("--precision", default=None, help="Lightning precision (default: 32-true / bf16-true by dtype)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads (0: torch's choice). One thread by default: on a machine shared with "
                        "other work, thread-synchronisation stalls swamp the ratios, and 2 cores gain only ~1.25x")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--memory-only", action="store_true", help=argparse.SUPPRESS)  # the memory pass's process
    return p.parse_args(argv)


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    device = torch.device(args.device)
    if args.memory_only and device.type == "cpu":
        _mmap_large_allocations()  # before the first large allocation, so the heap never holds tensors
    if args.threads and device.type == "cpu":
        torch.set_num_threads(args.threads)
    from gradprune.models.adapters import get_adapter
    from gradprune.recipe import TrainerSection

    precision = args.precision or ("bf16-true" if args.dtype == "bfloat16" else "32-true")
    trainer_cfg = TrainerSection(accelerator="gpu" if device.type == "cuda" else "cpu", devices=1,
                                 precision=precision)
    t0 = time.perf_counter()
    model = build_model(args, device)
    layers = get_adapter(model).layers(model)
    ids = token_batches(args, device)
    n_params = sum(p.numel() for p in model.parameters())
    n_prunable = sum(p.numel() for lm in layers for p in lm.weights().values())
    if not args.memory_only:
        print(f"model: {n_params / 1e6:.1f} M params ({n_prunable / 1e6:.1f} M prunable), {args.dtype}, "
              f"built in {time.perf_counter() - t0:.1f} s; {args.batches} micro-batches of {args.batch_size} x "
              f"{args.seq_len} tokens; device {device}, {torch.get_num_threads()} threads", flush=True)
    bs = args.batch_size

    def bare(x: torch.Tensor):
        return lambda: bare_loop(model, layers, x, bs, device)

    def grad_run(est: str, x: torch.Tensor):
        return lambda: gradprune_run(model, layers, x, bs, est, trainer_cfg, device)

    def baseline(x: torch.Tensor):
        return lambda: llm_pruner_baseline(model, layers, x, bs, args.baseline_per_sample, device)

    # warm-up: first-call costs (allocator, lazy imports in Lightning) stay out of every measurement
    bare(ids[:bs])()
    grad_run("taylor", ids[:bs])()

    out: dict[str, Measured] = {}
    if args.memory_only:
        mem = PeakMemory(device)
        few = ids[: args.memory_batches * bs]
        peak("bare", bare(few), mem, out)
        for est in args.estimators:
            peak(est, grad_run(est, few), mem, out)
        peak("llm_pruner", baseline(few), mem, out)
        peak("bare", bare(few), mem, out)
        print(MEMORY_TAG + json.dumps({k: [m.over, m.total] for k, m in out.items()}), flush=True)
        return

    print("time (every gradprune run between two bare runs)", flush=True)
    for r in range(args.rounds):
        print(f"round {r + 1}/{args.rounds}", flush=True)
        before = timed("bare", bare(ids), out)
        for est in args.estimators:
            b = timed(est, grad_run(est, ids), out)
            after = timed("bare", bare(ids), out)
            pair(b, before, after, out[est])
            before = after
        timed("llm_pruner", baseline(ids), out)
    print(f"peak memory ({args.memory_batches} micro-batches each, in a fresh process)", flush=True)
    for name, (over, total) in memory_subprocess(argv).items():
        out[name].over, out[name].total = over, total
    report(out, args)


MEMORY_TAG = "peak memory JSON: "


def memory_subprocess(argv: list[str]) -> dict[str, list[int]]:
    """Run the memory pass in a fresh process: its allocator has not been shaped by the timed runs."""
    proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), *argv, "--memory-only"],
                            stdout=subprocess.PIPE, text=True)
    result = None
    for line in proc.stdout:
        if line.startswith(MEMORY_TAG):
            result = json.loads(line[len(MEMORY_TAG):])
        else:
            print(line, end="", flush=True)
    if proc.wait() != 0 or result is None:
        raise SystemExit(f"the memory pass failed (exit {proc.returncode})")
    return result


def _mmap_large_allocations() -> None:
    """Serve allocations >= 64 KiB by mmap, so a freed tensor leaves the RSS at once.

    With glibc's adaptive default, freed tensors stay in the heap and its fragmentation moves the RSS
    peak of identical runs by 5-10 %; with this the RSS tracks the bytes in use (tensors are large). Set
    only in the memory pass: the page faults of fresh mappings would slow the timed runs down.
    """
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").mallopt(-3, 1 << 16)  # M_MMAP_THRESHOLD (also disables the adaptation)


def report(out: dict[str, Measured], args: argparse.Namespace) -> None:
    """The table, then one ``ratio`` line per target (an acceptance check greps for them)."""
    a, c = out["bare"], out["llm_pruner"]
    print()
    print(f"{'variant':<18} {'time s':>8} {'cpu s':>8} {'loop s':>8} {'hooks s':>8} {'peak+ MiB':>10} "
          f"{'total MiB':>10}  timed")
    for name, m in out.items():
        print(f"{name:<18} {m.mean('seconds'):8.2f} {m.mean('cpu'):8.2f} {m.mean('loop'):8.2f} {m.mean('hooks'):8.2f} "
              f"{m.over / 2**20:10.1f} {m.total / 2**20:10.1f}  {len(m.seconds)}")
    print("time: wall clock of the whole call (Trainer set-up and final scoring included); loop: first batch "
          "start to last batch end; hooks: inside gradprune's hooks (the extra work itself, measured directly); "
          "peak+: peak above the memory held before the run (weights, runtime)")
    print(f"load average (1, 5, 15 min) at the end: {', '.join(f'{x:.1f}' for x in os.getloadavg())} "
          f"on {os.cpu_count()} cores; time b/a is to the mean of the bare runs just before and after b")
    print()
    for name in args.estimators:
        b = out[name]
        target = "target <= 1.10" if name in STREAMING else "element-level, fp32 accumulators"
        print(f"ratio {name}: time b/a {b.ratio('time'):.3f} (loop only {b.ratio('loop'):.3f}, cpu "
              f"{b.ratio('cpu'):.3f}, hooks {b.mean('hooks') / b.mean('loop'):.1%} of the loop); peak memory b/a {b.over / a.over:.3f} ({target}; total "
              f"{b.total / a.total:.3f}); c/b {c.over / b.over:.2f}")
    baseline = "one backward per sample" if args.baseline_per_sample else "g² per micro-batch"
    if "fisher" in out:
        b = out["fisher"]
        print(f"ratio second order (fisher) vs LLM-Pruner-style baseline ({baseline}): peak memory c/b "
              f"{c.over / b.over:.2f} (target >= 2; total {c.total / b.total:.2f}); time c/a "
              f"{c.mean('seconds') / a.mean('seconds'):.2f}")
    slowest = max(args.estimators, key=lambda e: out[e].ratio("time"))
    streaming = [e for e in args.estimators if e in STREAMING]
    worst_mem = max((out[e].over / a.over for e in streaming), default=float("nan"))
    shares = [out[e].mean("hooks") / out[e].mean("loop") for e in args.estimators]
    print(f"ratio summary: worst time b/a {out[slowest].ratio('time'):.3f} ({slowest}; loop only "
          f"{out[slowest].ratio('loop'):.3f}, cpu {out[slowest].ratio('cpu'):.3f}); time in hooks "
          f"{min(shares):.1%}-{max(shares):.1%} of the loop; worst streaming peak memory b/a {worst_mem:.3f}")


if __name__ == "__main__":
    main()
