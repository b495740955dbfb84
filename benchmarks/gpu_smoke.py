"""Smoke run of the real path on one device: a Mistral-7B-shaped random model, the whole ``gradprune run``.

    python benchmarks/gpu_smoke.py                                   # GPU: 7B shape, bf16, ~5 min on an H100
    python benchmarks/gpu_smoke.py --shape 125m --device cpu --dtype float32 --seq-len 64 --samples 16
    python benchmarks/gpu_smoke.py --shape tiny --device cpu --dtype float32   # seconds: does it run

The model is built directly on the device in ``--dtype`` (random weights, std 0.02; the rotary buffer
stays float32 as ``from_pretrained`` leaves it) with the embedded tokenizer's vocabulary, so the
embedded corpus, perplexity text and lm-eval tasks apply. In one process it prints:

1. calibration throughput and peak memory on the same windows: a bare forward+backward loop (only the
   prunable weights require a gradient, each freed by a post-accumulate hook) vs ``calibrate`` (Lightning
   ``fit``, first-order Taylor + the 4 stat collectors), each without and with gradient checkpointing.
   Peak memory is the peak above what was in use before the variant (weights, runtime): CUDA allocator
   statistics, or the RSS high-water mark on CPU. Targets: calibrate >= 0.9x the bare loop's tokens/s
   and <= 1.10x its peak, for the same checkpointing setting;
2. the whole run (``run_experiment`` on that model: dense eval, calibration, planning, surgery, pruned
   perplexity and lm-eval): the seconds of every stage and the device every stage ran on.

Numbers are measured, never assumed: a variant that fails prints its error and the script exits 1.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from calibration import PeakMemory  # noqa: E402  (the sibling benchmark's peak-memory probe)

SHAPES = {  # hidden, intermediate, layers, heads, kv heads
    "7b": (4096, 14336, 32, 32, 8),  # Mistral-7B-v0.3
    "125m": (768, 2048, 12, 12, 4),  # the CPU benchmarks' model
    "tiny": (64, 128, 2, 4, 2),
}
COLLECTORS = ("grad_norm", "grad_mean", "grad_std", "grad_max")


def build_model(shape: str, vocab: int, device: torch.device, dtype: torch.dtype, seed: int):
    """A Mistral-shaped model with random weights, allocated on ``device`` in ``dtype`` from the start."""
    from transformers import MistralConfig, MistralForCausalLM

    hidden, inter, layers, heads, kv = SHAPES[shape]
    config = MistralConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=inter,
                           num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv,
                           max_position_embeddings=4096, tie_word_embeddings=False, initializer_range=0.02)
    torch.manual_seed(seed)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = MistralForCausalLM(config)
    finally:
        torch.set_default_dtype(previous)
    return model.eval()


def windows(tokenizer, seq_len: int, samples: int, seed: int) -> torch.Tensor:
    """Calibration windows drawn from the embedded corpus, as a run draws them."""
    from gradprune.data.sources import EmbeddedCorpus
    from gradprune.data.windows import draw_windows

    return draw_windows(EmbeddedCorpus(), tokenizer, seq_len, samples, seed).input_ids


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def bare_loop(model, layers, ids: torch.Tensor, batch_size: int, checkpointing: bool) -> None:
    """Forward + backward per micro-batch; gradients of the prunable weights only, freed at once."""
    from gradprune.calibration import activation_checkpointing, calibration_mode

    flags = {p: p.requires_grad for p in model.parameters()}
    with contextlib.ExitStack() as stack:
        stack.callback(lambda: [p.requires_grad_(f) for p, f in flags.items()])
        for p in model.parameters():
            p.requires_grad_(False)
        for lm in layers:
            for p in lm.weights().values():
                p.requires_grad_(True)
                stack.enter_context(p.register_post_accumulate_grad_hook(lambda q: setattr(q, "grad", None)))
        if checkpointing:
            stack.enter_context(activation_checkpointing(model))
        calibration_mode(model, checkpointing)
        for batch in ids.split(batch_size):
            loss = model(input_ids=batch, labels=batch, use_cache=False).loss
            loss.backward()
            del loss
        model.eval()


def gradprune_calibrate(model, layers, ids: torch.Tensor, batch_size: int, checkpointing: bool, trainer_cfg):
    """``calibrate`` as a run calls it: first-order Taylor and the four collectors."""
    from gradprune import plugins
    from gradprune.calibration import calibrate

    cols = [plugins.COLLECTORS.build(c) for c in COLLECTORS]
    return calibrate(model, layers, ids, batch_size, {"taylor": plugins.IMPORTANCE.build("taylor")}, cols,
                     trainer_cfg, gradient_checkpointing=checkpointing)


def measure(name: str, fn, device: torch.device, tokens: int) -> dict:
    """Wall time and peak memory above the start of one variant."""
    mem = PeakMemory(device)
    base = mem.reset()
    _sync(device)
    t0 = time.perf_counter()
    fn()
    _sync(device)
    seconds = time.perf_counter() - t0
    peak = mem.peak() - base
    print(f"  {name:<36} {seconds:8.2f} s  {tokens / seconds:10,.0f} tok/s  peak +{peak / 2**30:8.3f} GiB", flush=True)
    return {"seconds": seconds, "tokens_per_s": tokens / seconds, "peak_bytes": peak}


def calibration_table(model, layers, ids, args, trainer_cfg) -> dict:
    """Section 1: bare loop vs calibrate, without and with checkpointing, on the same windows."""
    device = next(model.parameters()).device
    tokens = ids.numel()
    bare_loop(model, layers, ids[: args.batch_size], args.batch_size, False)  # warm-up: kernels, allocator
    out: dict[str, dict] = {}
    for ckpt in (False, True):
        tag = "checkpointing" if ckpt else "plain"
        out[f"bare_{tag}"] = measure(f"bare loop ({tag})", lambda c=ckpt: bare_loop(
            model, layers, ids, args.batch_size, c), device, tokens)
        out[f"gradprune_{tag}"] = measure(f"gradprune calibrate ({tag})", lambda c=ckpt: gradprune_calibrate(
            model, layers, ids, args.batch_size, c, trainer_cfg), device, tokens)
    print(f"\n  {'':<16} {'tok/s vs bare':>14} {'peak vs bare':>13}   targets: >= 0.90, <= 1.10")
    for tag in ("plain", "checkpointing"):
        b, g = out[f"bare_{tag}"], out[f"gradprune_{tag}"]
        speed = g["tokens_per_s"] / b["tokens_per_s"]
        peak = g["peak_bytes"] / b["peak_bytes"] if b["peak_bytes"] > 0 else float("nan")
        out[f"ratio_{tag}"] = {"speed": speed, "peak": peak}
        print(f"  {tag:<16} {speed:14.3f} {peak:13.3f}")
    saved = out["bare_plain"]["peak_bytes"] / max(out["bare_checkpointing"]["peak_bytes"], 1)
    print(f"  checkpointing: bare-loop peak / {saved:.1f}, "
          f"calibrate tok/s x{out['gradprune_checkpointing']['tokens_per_s'] / out['gradprune_plain']['tokens_per_s']:.2f}")
    return out


def whole_run(model, tokenizer, args, recipe_overrides: list[str]) -> dict:
    """Section 2: ``run_experiment`` on the built model; stage times and devices."""
    from gradprune.recipe import load_recipe
    from gradprune.run import load_stage, run_experiment

    recipe = load_recipe(ROOT / "recipes/tiny.yaml", recipe_overrides)
    identity = f"random-mistral-{args.shape}|seed:{args.seed}|dtype:{args.dtype}"
    loaded = load_stage(recipe, model, tokenizer, identity=identity)
    out = run_experiment(recipe, loaded=loaded)
    rec = out.record
    stages = [("dense_eval", "time_dense_eval"), ("calibration", "time_calibration"),
              ("planning", "time_planning"), ("surgery", "time_surgery"), ("eval", "time_eval")]
    print(f"\n  {'stage':<12} {'seconds':>9}  device")
    for stage, key in stages:
        dev = rec["devices"].get(stage, rec["devices"].get("calibration") if stage == "planning" else "-")
        print(f"  {stage:<12} {rec['timings'].get(key, float('nan')):9.2f}  {dev}")
    m = rec["metrics"]
    print(f"  total {rec['timings']['time_total']:.1f} s; calibration {rec['calibration']['tokens_per_s']:,.0f} tok/s; "
          f"ratio {m['pruning_ratio']:.4f}; ppl dense {m.get('dense_ppl', float('nan')):.2f} -> {m.get('ppl', float('nan')):.2f}; "
          f"acc_mean dense {m.get('dense_acc_mean', float('nan')):.4f} -> {m.get('acc_mean', float('nan')):.4f}")
    return {"timings": rec["timings"], "devices": rec["devices"], "dtype": rec["dtype"],
            "metrics": {k: m[k] for k in ("pruning_ratio", "ppl", "dense_ppl", "acc_mean", "dense_acc_mean") if k in m},
            "calibration_tokens_per_s": rec["calibration"]["tokens_per_s"]}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--shape", choices=list(SHAPES), default="7b")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", choices=["bfloat16", "float32"], default="bfloat16")
    p.add_argument("--vocab", type=int, default=None,
                   help="model vocabulary (default: the embedded tokenizer's; 32000 gives the 124.7 M CPU model)")
    p.add_argument("--seq-len", type=int, default=512)
    p.add_argument("--samples", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--eval-limit", type=int, default=100, help="examples per embedded task in the whole run")
    p.add_argument("--ppl-windows", type=int, default=64)
    p.add_argument("--ratio", type=float, default=0.2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--skip-run", action="store_true", help="only the calibration table")
    p.add_argument("--json", help="also write the numbers to this JSON file")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    # a private dense-metric cache: the dense evaluation is really run (and timed) here
    os.environ["GRADPRUNE_CACHE"] = tempfile.mkdtemp(prefix="gpu-smoke-cache-")
    from transformers import AutoTokenizer

    from gradprune.assets import MODEL_DIR
    from gradprune.models.adapters import get_adapter
    from gradprune.recipe import TrainerSection

    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype)
    precision = "bf16-true" if args.dtype == "bfloat16" else "32-true"
    accelerator = "gpu" if device.type == "cuda" else "cpu"
    tok = AutoTokenizer.from_pretrained(MODEL_DIR)
    t0 = time.perf_counter()
    vocab = args.vocab or len(tok)
    if vocab < len(tok):
        raise SystemExit(f"--vocab {vocab} is smaller than the embedded tokenizer's {len(tok)}")
    model = build_model(args.shape, vocab, device, dtype, args.seed)
    _sync(device)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"gpu_smoke: {args.shape} Mistral shape, {n_params / 1e9:.2f} B params, {args.dtype} on {device} "
          f"(built in {time.perf_counter() - t0:.1f} s); windows {args.samples} x {args.seq_len}, "
          f"micro-batch {args.batch_size}; torch {torch.__version__}"
          + (f", {torch.cuda.get_device_name(device)}" if device.type == "cuda" else ""), flush=True)
    layers = get_adapter(model).layers(model)
    ids = windows(tok, args.seq_len, args.samples, args.seed).to(device)
    trainer_cfg = TrainerSection(accelerator=accelerator, devices=1, precision=precision)
    print("\n1. calibration: bare forward+backward loop vs gradprune calibrate")
    result = {"args": vars(args), "params": n_params, "calibration": calibration_table(model, layers, ids, args, trainer_cfg)}
    if not args.skip_run:
        print("\n2. the whole run on this model (recipes/tiny.yaml, embedded data and tasks)")
        overrides = [f"model.dtype={args.dtype}", f"trainer.accelerator={accelerator}", f"trainer.precision={precision}",
                     f"calibration.seq_len={args.seq_len}", f"calibration.num_samples={args.samples}",
                     f"calibration.batch_size={args.batch_size}", "calibration.gradient_checkpointing=true",
                     "~pruning.attention_layers", "~pruning.mlp_layers", f"pruning.ratio={args.ratio}",
                     f"eval.limit={args.eval_limit}", f"eval.ppl_max_windows={args.ppl_windows}", "eval.batch_size=auto",
                     f"output.dir={tempfile.mkdtemp(prefix='gpu-smoke-run-')}"]
        result["run"] = whole_run(model, tok, args, overrides)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
