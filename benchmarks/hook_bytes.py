"""Bytes per parameter the calibration hooks move per micro-batch, and the H100 roofline they predict.

    .venv/bin/python benchmarks/hook_bytes.py                         # ~1-2 min here
    .venv/bin/python benchmarks/hook_bytes.py --tokens 8x64 8x512 64x512 --repeats 5

On a GPU the hooks' cost is bytes moved, not FLOPs. This benchmark counts them: a ``TorchDispatchMode``
sees every aten operation the gradient hook (``HookDispatcher.on_grad``) runs and sums the bytes of the
tensors it reads (its inputs; the destination of ``copy_``/``fill_``/``zero_`` and ``out=`` excluded) and
writes (its outputs, an in-place operation's target); views move nothing. That is what a GPU kernel
touches once; CPU kernels may add internal copies (a bf16 input cast to fp32) that are not counted. The
counts are taken on Mistral-7B's shapes (hidden 4,096, 32/8 heads, MLP 14,336, vocab 32,768) with
gradients on the meta device (shapes only, no memory), in the second micro-batch (the first allocates
the accumulators), for bf16 and fp32 gradients, for every hook configuration (estimator × with or without
the statistics' collectors).

Roofline (a prediction, not a measurement): the bare forward + backward takes 6·N·T FLOP (N all
parameters, T tokens per micro-batch) at 50 % of 790 TFLOP/s (H100 SXM, dense bf16); the hooks take
bytes-per-parameter × prunable parameters at 80 % of 3.35 TB/s (HBM3). Predicted calibration time ÷
bare = 1 + hooks ÷ bare. The hooks' kernel launches (ops per micro-batch, printed) overlap the backward's
GPU work when the host keeps ahead of it and are not in the prediction. Beside it, measured here: the same
hooks in a plain loop on a small Mistral-shaped model on this CPU, ÷ the bare loop on the same batches.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time

import torch
from torch.utils._python_dispatch import TorchDispatchMode

# ---------------------------------------------------------------------------------------------- assumptions
H100_BF16_FLOPS = 790e12
H100_HBM_BYTES_PER_S = 3.35e12
GEMM_EFFICIENCY = 0.50
BANDWIDTH_EFFICIENCY = 0.80
MISTRAL_7B = dict(vocab_size=32768, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                  num_attention_heads=32, num_key_value_heads=8)
SMALL = dict(vocab_size=1024, hidden_size=128, intermediate_size=344, num_hidden_layers=2,
             num_attention_heads=4, num_key_value_heads=2)
COLLECTORS = ("grad_norm", "grad_mean", "grad_std", "grad_max", "grad_var", "grad_snr")
#: hook configuration -> (estimator registry name, params) or None (statistics only)
ESTIMATORS: dict[str, tuple[str, dict] | None] = {
    "taylor vector": ("taylor", {"order": "first", "granularity": "vector"}),
    "taylor joint": ("taylor", {"order": "first", "granularity": "joint"}),
    "taylor element": ("taylor", {"order": "first", "granularity": "element"}),
    "fisher (sum)": ("fisher", {}),
    "fisher max": ("fisher", {"reduction": "max"}),
    "taylor_mix": ("taylor_mix", {}),
    "stats only": None,
}
#: the configurations timed on the CPU (each costs a few bare-loop runs per token count)
MEASURED = ("taylor vector + stats", "fisher (sum) + stats", "taylor_mix + stats")
# write-only in-place operations: their target is written, not read
_WRITE_ONLY = {"copy_", "fill_", "zero_", "normal_", "uniform_", "random_"}


class ByteCounter(TorchDispatchMode):
    """Sums the bytes every aten operation reads and writes, and counts the operations (kernels)."""

    def __init__(self) -> None:
        super().__init__()
        self.read = self.written = self.ops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        schema = func._schema
        returns = [r.alias_info for r in schema.returns]
        if returns and all(a is not None and not a.is_write for a in returns):
            return out  # a view: no data moves
        self.ops += 1
        name = schema.name.split("::")[-1]
        seen: set = set()
        for arg, value in [*zip(schema.arguments, args, strict=False), *((a, kwargs[a.name]) for a in schema.arguments
                                                              if a.name in kwargs)]:
            for t in (value if isinstance(value, (list, tuple)) else (value,)):
                if not isinstance(t, torch.Tensor):
                    continue
                key = (t.data_ptr() if t.device.type != "meta" else id(t), t.dtype, tuple(t.shape), t.stride())
                if key in seen:
                    continue
                seen.add(key)
                nbytes = t.numel() * t.element_size()
                if arg.alias_info is not None and arg.alias_info.is_write:
                    self.written += nbytes
                    if arg.name == "out" or name in _WRITE_ONLY:
                        continue
                self.read += nbytes
        if not any(a is not None and a.is_write for a in returns):
            for t in (out if isinstance(out, (list, tuple)) else (out,)):
                if isinstance(t, torch.Tensor):
                    self.written += t.numel() * t.element_size()
        return out


def build_model(shape: dict, dtype: torch.dtype, device: str, seed: int = 0):
    """A Mistral-shaped model (meta: shapes only)."""
    from transformers import MistralConfig, MistralForCausalLM

    torch.manual_seed(seed)
    with torch.device(device):
        model = MistralForCausalLM(MistralConfig(**shape, max_position_embeddings=4096, tie_word_embeddings=False))
    return model.to(dtype).eval()


def dispatcher_for(config: str, layers, device: torch.device):
    """The hook dispatcher calibration builds for ``config`` ("<estimator>[ + stats]")."""
    from gradprune import plugins
    from gradprune.calibration import hook_dispatcher

    est_name, _, stats = config.partition(" + ")
    spec = ESTIMATORS[est_name]
    ests = [] if spec is None else [plugins.IMPORTANCE.build(*spec)]
    cols = [plugins.COLLECTORS.build(c) for c in COLLECTORS] if stats or spec is None else []
    return hook_dispatcher(layers, ests, cols, device)


def configurations() -> list[str]:
    """Every estimator without and with the statistics, and the statistics alone."""
    return [c for e, spec in ESTIMATORS.items() for c in ((e, f"{e} + stats") if spec else (e,))]


def prunable(layers) -> int:
    return sum(p.numel() for lm in layers for p in lm.weights().values())


def count_hook_bytes(config: str, dtype: torch.dtype, shape: dict) -> dict:
    """Bytes read/written and ops of the gradient hooks for one micro-batch (the second), per parameter."""
    from gradprune.models.adapters import get_adapter

    model = build_model({**shape, "num_hidden_layers": 1}, dtype, "meta")
    layers = get_adapter(model).layers(model)
    dispatcher = dispatcher_for(config, layers, torch.device("meta"))
    counter = ByteCounter()
    for batch in range(2):
        dispatcher.begin_batch(8)
        for lm in layers:
            for role, p in lm.weights().items():
                p.grad = torch.empty_like(p)
                with counter if batch == 1 else contextlib.nullcontext():
                    dispatcher.on_grad(lm, role, p)
    n = prunable(layers)
    return {"read": counter.read / n, "written": counter.written / n, "bytes": (counter.read + counter.written) / n,
            "ops_per_weight": counter.ops / sum(len(lm.weights()) for lm in layers)}


# ---------------------------------------------------------------------------------------------- CPU timing


def run_loop(model, layers, batches, dispatcher=None) -> float:
    """Seconds of forward + backward per micro-batch; with ``dispatcher``: gradprune's hooks (as calibration
    registers them), else the bare loop: gradients of the prunable weights only, each freed at once."""
    from gradprune.hooks import register_hooks

    with contextlib.ExitStack() as stack:
        if dispatcher is not None:
            register_hooks(stack, model, layers, dispatcher, grads=True, acts=False)
        else:
            flags = {p: p.requires_grad for p in model.parameters()}
            stack.callback(lambda: [p.requires_grad_(f) for p, f in flags.items()])
            for p in model.parameters():
                p.requires_grad_(False)
            for lm in layers:
                for p in lm.weights().values():
                    p.requires_grad_(True)
                    stack.enter_context(p.register_post_accumulate_grad_hook(lambda q: setattr(q, "grad", None)))
        _sync(batches[0].device)
        t0 = time.perf_counter()
        for ids in batches:
            if dispatcher is not None:
                dispatcher.begin_batch(ids.shape[0])
                with dispatcher.forward_pass():
                    loss = model(input_ids=ids, labels=ids, use_cache=False).loss
            else:
                loss = model(input_ids=ids, labels=ids, use_cache=False).loss
            loss.backward()
            if dispatcher is not None:
                dispatcher.end_batch(loss)
            del loss
        if dispatcher is not None:
            dispatcher.flush()
        _sync(batches[0].device)
        return time.perf_counter() - t0


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _cpu_seconds(*args) -> float:
    """CPU seconds of this process for one :func:`run_loop` (other jobs on a shared machine barely move it)."""
    t0 = time.process_time()
    run_loop(*args)
    return time.process_time() - t0


def measure_cpu(config: str, batch: int, seq: int, repeats: int, micro_batches: int) -> float:
    """Median over ``repeats`` of (hooked loop ÷ the mean of the bare loops just before and after it), in CPU
    time of this process."""
    from gradprune.models.adapters import get_adapter

    model = build_model(SMALL, torch.float32, "cpu")
    layers = get_adapter(model).layers(model)
    gen = torch.Generator().manual_seed(1)
    batches = [torch.randint(0, SMALL["vocab_size"], (batch, seq), generator=gen) for _ in range(micro_batches)]
    run_loop(model, layers, batches[:1], None)  # warm-up
    ratios = []
    bare = _cpu_seconds(model, layers, batches, None)
    for _ in range(repeats):
        hooked = _cpu_seconds(model, layers, batches, dispatcher_for(config, layers, torch.device("cpu")))
        after = _cpu_seconds(model, layers, batches, None)
        ratios.append(hooked / ((bare + after) / 2))
        bare = after
    return statistics.median(ratios)


# ---------------------------------------------------------------------------------------------- report


def roofline(bytes_per_param: float, n_prunable: int, n_total: int, tokens: int) -> tuple[float, float, float]:
    """(bare seconds, hook seconds, predicted ratio) of one micro-batch of ``tokens`` on an H100."""
    bare = 6 * n_total * tokens / (GEMM_EFFICIENCY * H100_BF16_FLOPS)
    hooks = bytes_per_param * n_prunable / (BANDWIDTH_EFFICIENCY * H100_HBM_BYTES_PER_S)
    return bare, hooks, 1 + hooks / bare


def parse_tokens(text: str) -> tuple[int, int]:
    b, _, s = text.lower().partition("x")
    return int(b), int(s)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--tokens", nargs="+", default=["8x64", "8x256", "8x512", "16x512", "32x512"],
                   help="micro-batches as <samples>x<seq_len> (tokens per micro-batch = the product)")
    p.add_argument("--repeats", type=int, default=3, help="paired CPU timings per point (median)")
    p.add_argument("--micro-batches", type=int, default=2, help="micro-batches per timed CPU loop")
    p.add_argument("--skip-cpu", action="store_true", help="only the byte counts and the roofline")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    from gradprune.models.adapters import get_adapter

    full = build_model(MISTRAL_7B, torch.bfloat16, "meta")
    n_total = sum(q.numel() for q in full.parameters())
    n_prunable = prunable(get_adapter(full).layers(full))
    points = [parse_tokens(t) for t in args.tokens]
    print(f"hook bytes per parameter per micro-batch (Mistral-7B shapes: {n_prunable / 1e9:.3f} B prunable of "
          f"{n_total / 1e9:.3f} B parameters), read + written by HookDispatcher.on_grad")
    print(f"roofline assumptions: bare fwd+bwd = 6*N*T FLOP at {GEMM_EFFICIENCY:.0%} of "
          f"{H100_BF16_FLOPS / 1e12:.0f} TFLOP/s bf16; hooks = bytes/param * prunable at "
          f"{BANDWIDTH_EFFICIENCY:.0%} of {H100_HBM_BYTES_PER_S / 1e12:.2f} TB/s; predicted = 1 + hooks/bare")
    rows = []
    for config in configurations():
        bf16 = count_hook_bytes(config, torch.bfloat16, MISTRAL_7B)
        fp32 = count_hook_bytes(config, torch.float32, MISTRAL_7B)
        rows.append((config, bf16, fp32))
    print(f"\n{'configuration':<24}{'bf16 B/param':>13}{'(r + w)':>12}{'fp32 B/param':>13}{'ops/weight':>11}"
          f"{'hooks s':>9}")
    for config, bf16, fp32 in rows:
        _, hooks, _ = roofline(bf16["bytes"], n_prunable, n_total, 1)
        print(f"{config:<24}{bf16['bytes']:13.1f}{bf16['read']:6.1f}+{bf16['written']:<5.1f}{fp32['bytes']:13.1f}"
              f"{bf16['ops_per_weight']:11.1f}{hooks:9.3f}")
    head = "".join(f"{f'{b}x{s}':>9}" for b, s in points)
    print(f"\npredicted H100 calibration / bare (bf16, roofline), tokens per micro-batch: "
          f"{', '.join(f'{b * s:,}' for b, s in points)}")
    print(f"{'configuration':<24}{head}")
    for config, bf16, _ in rows:
        print(f"{config:<24}" + "".join(f"{roofline(bf16['bytes'], n_prunable, n_total, b * s)[2]:9.3f}"
                                        for b, s in points))
    bare = [roofline(0, n_prunable, n_total, b * s)[0] for b, s in points]
    print(f"{'(bare s per micro-batch)':<24}" + "".join(f"{t:9.3f}" for t in bare))
    print("targets: <= 1.10 at >= 4,096 tokens per micro-batch, <= 1.20 at 2,048")
    if not args.skip_cpu:
        print(f"\nmeasured on this CPU (1 thread, fp32, small Mistral shape {SMALL['hidden_size']}/"
              f"{SMALL['num_hidden_layers']} layers, {args.micro_batches} micro-batches, median of "
              f"{args.repeats} paired runs): hooked loop / bare loop, CPU time of this process")
        print(f"{'configuration':<24}{head}")
        for config in MEASURED:
            vals = [measure_cpu(config, b, s, args.repeats, args.micro_batches) for b, s in points]
            print(f"{config:<24}" + "".join(f"{v:9.3f}" for v in vals), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
