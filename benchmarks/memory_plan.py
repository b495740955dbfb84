"""The memory plan's calibration estimate against the measured peak, on CPU.

Run by hand (about 4 min on a 2-core machine; ``--sizes`` / ``--seq-lens`` pick a subset):

    .venv/bin/python benchmarks/memory_plan.py
    .venv/bin/python benchmarks/memory_plan.py --sizes small --seq-lens 32 --json out.json
    .venv/bin/python benchmarks/memory_plan.py --hooks "stats.collectors=[grad_norm]"

``--hooks OVERRIDE...`` measures instead the gradient hooks' temporaries for one bf16 gradient of the
largest weight on the CPU (the recipe's estimator and collectors, recipes/tiny.yaml with the overrides),
the same way, against the plan's ``hook_bytes`` on the host less the gradient itself.

For each model size (Mistral-shaped, random weights, built from a config: no file is read), each
window length, with and without gradient checkpointing, a fresh process builds the model, then runs
``gradprune.calibration.calibrate`` (first-order Taylor + the four statistics: the fp32 mean-gradient
buffer included) on two micro-batches and records its peak: the resident set's high-water mark
(``VmHWM``, reset through ``/proc/self/clear_refs`` just before) minus the resident set just before,
with allocations >= 64 KiB served by mmap so that freed tensors leave the resident set at once. The plan's
estimate of the same stage comes from ``gradprune.memory`` (the config and the recipe only). The stage
peak is the weights plus that dynamic part; both are compared (target: the stage within ±15 %).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SIZES = {  # hidden, layers, intermediate, query heads, KV heads, vocabulary
    "tiny": (128, 2, 344, 4, 2, 2000),
    "small": (512, 8, 1376, 8, 2, 16000),
    "medium": (768, 12, 2048, 12, 4, 32000),
    "large": (1024, 16, 2816, 16, 4, 32000),
}


def config(size: str):
    """A Mistral config of one of ``SIZES``."""
    from transformers import MistralConfig

    h, n, i, q, kv, v = SIZES[size]
    return MistralConfig(vocab_size=v, hidden_size=h, intermediate_size=i, num_hidden_layers=n, num_attention_heads=q,
                         num_key_value_heads=kv, max_position_embeddings=4096, tie_word_embeddings=False)


DTYPE = "float32"  # --dtype (the measuring process gets it on its command line)


def recipe(seq_len: int, batch: int, checkpointing: bool):
    """The recipe whose calibration is measured (two micro-batches; no evaluation)."""
    from gradprune.recipe import load_recipe

    precision = {"float32": "32-true", "bfloat16": "bf16-true"}[DTYPE]
    return load_recipe(ROOT / "recipes/tiny.yaml", [f"model.dtype={DTYPE}", f"trainer.precision={precision}",
        f"calibration.seq_len={seq_len}", f"calibration.num_samples={2 * batch}", f"calibration.batch_size={batch}",
        f"calibration.gradient_checkpointing={str(checkpointing).lower()}", "eval.run=none"])


def estimate(size: str, seq_len: int, batch: int, checkpointing: bool) -> dict:
    """The plan's calibration stage: its peak and the weights in it."""
    from gradprune.memory.plan import plan_memory
    from gradprune.memory.shape import model_shape
    from gradprune.memory.workload import workload

    shape = model_shape(config(size))
    plan = plan_memory(shape, workload(recipe(seq_len, batch, checkpointing)))
    return {"stage": plan.stage_peak("calibration"), "weights": plan.item("calibration", "weights"),
            "params": shape.params}


def measure(size: str, seq_len: int, batch: int, checkpointing: bool) -> dict:
    """In this (fresh) process: the measured peak of one calibration."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").mallopt(-3, 1 << 16)  # M_MMAP_THRESHOLD: large frees leave the RSS at once
    import torch
    from transformers import MistralForCausalLM

    from gradprune import plugins
    from gradprune.calibration import calibrate
    from gradprune.memory.peaks import host_peak_bytes, reset_host_peak, rss_bytes
    from gradprune.models.adapters import get_adapter

    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = MistralForCausalLM(config(size)).to(getattr(torch, DTYPE)).eval()
    r = recipe(seq_len, batch, checkpointing)
    ids = torch.randint(0, model.config.vocab_size, (2 * batch, seq_len))
    est = plugins.IMPORTANCE.build(r.importance.name, r.importance.params)
    cols = [plugins.COLLECTORS.build(c) for c in r.stats.collectors]
    layers = get_adapter(model).layers(model)
    # warm-up, as measured (first calls import modules and set up thread pools: not the plan's business)
    calibrate(model, layers, ids[:batch], batch, {"w": plugins.IMPORTANCE.build("taylor")}, [], r.trainer,
              gradient_checkpointing=checkpointing)
    if not reset_host_peak():
        raise SystemExit("needs Linux /proc/self/clear_refs")
    before = rss_bytes()
    calibrate(model, layers, ids, batch, {"e": est}, cols, r.trainer, gradient_checkpointing=checkpointing)
    return {"dynamic": host_peak_bytes() - before}


HOOK_LAYER = dict(vocab_size=256, hidden_size=512, intermediate_size=4096, num_hidden_layers=1, num_attention_heads=8,
                  num_key_value_heads=2)


def measure_hooks(overrides: list[str]) -> dict:
    """In this (fresh) process: the hooks' transient bytes for one bf16 gradient of the largest weight of a
    one-layer model, and the plan's count of them (``hook_bytes`` on the host, less the gradient)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").mallopt(-3, 1 << 16)
    import torch
    from transformers import MistralConfig, MistralForCausalLM

    from gradprune.calibration import hook_dispatcher
    from gradprune.memory.peaks import host_peak_bytes, reset_host_peak, rss_bytes
    from gradprune.memory.plan import hook_bytes
    from gradprune.memory.shape import model_shape
    from gradprune.memory.workload import estimator_traits, workload
    from gradprune.models.adapters import get_adapter
    from gradprune.recipe import load_recipe

    torch.set_num_threads(1)
    r = load_recipe(ROOT / "recipes/tiny.yaml", ["model.dtype=bfloat16", "trainer.precision=bf16-true", *overrides])
    cfg = MistralConfig(**HOOK_LAYER, max_position_embeddings=512, tie_word_embeddings=False)
    model = MistralForCausalLM(cfg).to(torch.bfloat16).eval()
    layers = get_adapter(model).layers(model)
    est, cols = estimator_traits(r)
    dispatcher = hook_dispatcher(layers, [est], cols, torch.device("cpu"))
    (lm,) = layers
    role, weight = max(lm.weights().items(), key=lambda kv: kv[1].numel())
    for batch in range(2):  # the first micro-batch creates every buffer; the second is measured
        dispatcher.begin_batch(4)
        for rl, p in ([(role, weight)] if batch else lm.weights().items()):
            p.grad = torch.randn_like(p)
            if batch:
                if not reset_host_peak():
                    raise SystemExit("needs Linux /proc/self/clear_refs")
                before = rss_bytes()
            dispatcher.on_grad(lm, rl, p)
    measured = host_peak_bytes() - before
    shape = model_shape(cfg)
    planned = hook_bytes(shape, workload(r), host_is_device=True) - shape.largest_weight * 2
    return {"measured": measured, "planned": planned, "n": weight.numel()}


def run_case(size: str, seq_len: int, batch: int, checkpointing: bool) -> dict:
    """One row: estimate here, measurement in a fresh process."""
    cmd = [sys.executable, __file__, "--dtype", DTYPE, "--measure", size, str(seq_len), str(batch),
           str(int(checkpointing))]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=ROOT)
    measured = json.loads(proc.stdout.strip().splitlines()[-1])["dynamic"]
    est = estimate(size, seq_len, batch, checkpointing)
    dyn = est["stage"] - est["weights"]
    return {"size": size, "dtype": DTYPE, "params": est["params"], "seq_len": seq_len, "batch": batch, "checkpointing": checkpointing,
            "estimate_bytes": est["stage"], "measured_bytes": est["weights"] + measured,
            "dynamic_estimate_bytes": dyn, "dynamic_measured_bytes": measured,
            "error": est["stage"] / (est["weights"] + measured) - 1, "dynamic_error": dyn / measured - 1}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", nargs="+", default=["small", "medium", "large"], choices=list(SIZES))
    p.add_argument("--seq-lens", nargs="+", type=int, default=[32, 128])
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    p.add_argument("--json", help="write the rows here")
    p.add_argument("--measure", nargs=4, help=argparse.SUPPRESS)
    p.add_argument("--hooks", nargs="*", metavar="OVERRIDE", help="measure the hooks' temporaries instead")
    args = p.parse_args()
    global DTYPE
    DTYPE = args.dtype
    if args.hooks is not None:
        print(json.dumps(measure_hooks(args.hooks)))
        return
    if args.measure:
        size, seq, batch, ckpt = args.measure
        print(json.dumps(measure(size, int(seq), int(batch), bool(int(ckpt)))))
        return
    rows = []
    print(f"{'size':>7} {'params':>7} {'seq':>4} {'ckpt':>5} {'estimate':>10} {'measured':>10} {'error':>7} "
          f"{'dyn est':>9} {'dyn meas':>9} {'dyn err':>7}")
    for size in args.sizes:
        for seq in args.seq_lens:
            for ckpt in (False, True):
                r = run_case(size, seq, args.batch, ckpt)
                rows.append(r)
                mib = 2**20
                print(f"{size:>7} {r['params'] / 1e6:6.1f}M {seq:>4} {str(ckpt):>5} {r['estimate_bytes'] / mib:8.1f}Mi "
                      f"{r['measured_bytes'] / mib:8.1f}Mi {r['error']:+7.1%} {r['dynamic_estimate_bytes'] / mib:7.1f}Mi "
                      f"{r['dynamic_measured_bytes'] / mib:7.1f}Mi {r['dynamic_error']:+7.1%}", flush=True)
    worst = max(rows, key=lambda r: abs(r["error"]))
    print(f"ratio worst stage error {worst['error']:+.1%} ({worst['size']}, seq {worst['seq_len']}, "
          f"checkpointing {worst['checkpointing']}; target within ±15 %); worst dynamic-part error "
          f"{max((r['dynamic_error'] for r in rows), key=abs):+.1%}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
