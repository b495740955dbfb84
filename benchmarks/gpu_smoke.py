"""The one prepared device check: a Mistral-7B-shaped random checkpoint through the real path, one table.

    python benchmarks/gpu_smoke.py                              # one GPU: 7B shape, bf16, <= 5 min on an H100
    python benchmarks/gpu_smoke.py --shape tiny --device cpu    # the same stages on a CPU, in a few minutes

Needs no network and no installed gradprune (run it from the repository root); on a machine without lm-eval,
datasets, pydantic or optuna the wheels listed in benchmarks/README.md travel with it. In one process:

1. checkpoint: a Mistral-shaped model (hidden 4,096, 32 layers, 32/8 heads, MLP 14,336; vocabulary 32,768 as
   Mistral-7B-v0.3's; random weights, std 0.02) built on the device in ``--dtype`` and written to local disk
   with ``save_pretrained`` (safetensors), beside the embedded tokenizer (its ~850 tokens are the
   vocabulary's first ids, so the embedded texts and the task files apply);
2. load: gradprune's loading stage, ``from_pretrained(device_map=<device>)`` as every run loads;
3. calibration: the bare forward + backward loop vs ``calibrate`` (first-order Taylor + 4 statistics) on the
   same windows: tokens/s and peak memory above the weights, next to the H100 roofline prediction for this
   micro-batch (benchmarks/hook_bytes.py);
4. search: ``gradprune search`` over two grid points (calibration.seed 0 and 1) of that checkpoint, trials back
   to back in this process, each a whole run (load, dense evaluation in the first, calibration, planning,
   surgery, evaluation): perplexity of WikiText-2 read through the hub cache (a local cache laid out as
   huggingface_hub lays it out, the embedded text in the data set's parquet schema) and lm-eval's ``piqa``
   on local files in the hub schema (tests/fixtures/lm_eval_tasks). Trial 2's peak must stay within 2 % of
   trial 1's (nothing of trial 1 kept alive).

The last table gives every stage's device and seconds. Peak memory: CUDA allocator statistics, or the RSS
high-water mark on a CPU (where the 2 % check is reported, not enforced: the Python heap moves the RSS).
Exit status 1 when a stage fails, a stage ran on another device than asked, or (CUDA) the 2 % check fails.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

SHAPES = {  # hidden, intermediate, layers, heads, kv heads
    "7b": (4096, 14336, 32, 32, 8),  # Mistral-7B-v0.3
    "125m": (768, 2048, 12, 12, 4),  # the CPU benchmarks' model
    "tiny": (64, 128, 2, 4, 2),
}
#: per shape: (windows, seq_len, micro-batch) of the calibration table; the search's (samples, seq_len, micro-batch)
WORKLOAD = {"7b": ((32, 512, 4), (64, 128, 8)), "125m": ((16, 128, 4), (32, 64, 8)), "tiny": ((8, 64, 4), (16, 32, 8))}
VOCAB = 32768
#: pruning.ratio per shape: 20 % as in the study; the tiny shape is mostly embeddings (2 x 32,768 x 64)
RATIO = {"7b": 0.2, "125m": 0.2, "tiny": 0.01}
COLLECTORS = ("grad_norm", "grad_mean", "grad_std", "grad_max")
WIKITEXT_COMMIT = "5" * 40  # the local hub cache's snapshot (any 40 hex digits)
#: a trial's stages: (label, run.json timing, run.json device)
STAGE_ROWS = (("load", "time_load", "load"), ("dense eval", "time_dense_eval", "dense_eval"),
              ("calibration", "time_calibration", "calibration"), ("planning", "time_planning", "calibration"),
              ("surgery", "time_surgery", "surgery"), ("eval (pruned)", "time_eval", "eval"))


def isolate(work: Path) -> None:
    """Offline, with caches of this run's own (set before huggingface_hub, datasets or gradprune load)."""
    os.environ.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_NO_ADVISORY_WARNINGS="1",
                      HF_HUB_CACHE=str(work / "hub"), HF_DATASETS_CACHE=str(work / "datasets"),
                      GRADPRUNE_CACHE=str(work / "dense-cache"))


def cache_wikitext(work: Path) -> None:
    """WikiText-2's test split as the hub serves it (parquet, field ``text``), holding the embedded text."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from gradprune.assets import PPL_PATH
    from gradprune.eval.ppl_data import HUB_TEXTS

    spec = HUB_TEXTS["wikitext2"]
    repo = work / "hub" / f"datasets--{spec.repo.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / spec.revision).write_text(WIKITEXT_COMMIT)
    path = repo / "snapshots" / WIKITEXT_COMMIT / spec.files[0]
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({spec.field: PPL_PATH.read_text("utf-8").split("\n")}), path)


def sync(device) -> None:
    import torch

    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


class Table:
    """The rows of the final table: stage, device, seconds, tokens/s, peak GiB, note."""

    def __init__(self) -> None:
        self.rows: list[dict] = []

    def add(self, stage: str, device: str, seconds: float, tokens_per_s: float | None = None,
            peak: int | None = None, note: str = "") -> None:
        self.rows.append({"stage": stage, "device": device, "seconds": seconds, "tokens_per_s": tokens_per_s,
                          "peak_gib": None if peak is None else peak / 2**30, "note": note})
        print(f"  {stage:<30} {device:<7} {seconds:8.2f} s" + (f"  {tokens_per_s:,.0f} tok/s" if tokens_per_s else "")
              + (f"  peak {peak / 2**30:.3f} GiB" if peak is not None else "") + (f"  {note}" if note else ""),
              flush=True)

    def print(self) -> None:
        print(f"\n{'stage':<30} {'device':<7} {'seconds':>8} {'tok/s':>10} {'peak GiB':>9}  note")
        for r in self.rows:
            tps = f"{r['tokens_per_s']:,.0f}" if r["tokens_per_s"] else ""
            peak = f"{r['peak_gib']:.3f}" if r["peak_gib"] is not None else ""
            print(f"{r['stage']:<30} {r['device']:<7} {r['seconds']:8.2f} {tps:>10} {peak:>9}  {r['note']}")


def _status(key: str) -> int:
    with open("/proc/self/status") as f:
        line = next(x for x in f if x.startswith(key + ":"))
    return int(line.split()[1]) * 1024


def measured(device, fn, collect: bool = True):
    """(result, seconds, peak bytes above the start, peak bytes) of ``fn()``. ``collect``: free what is
    unreachable first (not between search trials: what a trial leaves behind should show)."""
    import torch

    cuda = torch.device(device).type == "cuda"
    if collect:
        gc.collect()
    if cuda:
        torch.cuda.synchronize()
        if collect:
            torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # the RSS high-water mark restarts from the current RSS
        base = _status("VmRSS")
    t0 = time.perf_counter()
    out = fn()
    sync(device)
    seconds = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated() if cuda else _status("VmHWM")
    return out, seconds, peak - base, peak


def write_checkpoint(args, path: Path, table: Table) -> int:
    """Stage 1: a random Mistral-shaped model, built on the device, saved with its tokenizer."""
    import torch
    from transformers import AutoTokenizer, MistralConfig, MistralForCausalLM

    from gradprune.assets import MODEL_DIR

    def build_and_save() -> int:
        hidden, inter, layers, heads, kv = SHAPES[args.shape]
        config = MistralConfig(vocab_size=VOCAB, hidden_size=hidden, intermediate_size=inter,
                               num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv,
                               max_position_embeddings=4096, tie_word_embeddings=False, initializer_range=0.02)
        torch.manual_seed(args.seed)
        previous = torch.get_default_dtype()
        torch.set_default_dtype(getattr(torch, args.dtype))
        try:
            with torch.device(args.device):
                model = MistralForCausalLM(config)
        finally:
            torch.set_default_dtype(previous)
        n = sum(p.numel() for p in model.parameters())
        model.save_pretrained(path)
        AutoTokenizer.from_pretrained(MODEL_DIR).save_pretrained(path)
        del model
        return n

    n_params, seconds, _, _ = measured(args.device, build_and_save)
    gc.collect()
    size = sum(f.stat().st_size for f in path.glob("*.safetensors"))
    table.add("checkpoint: build + write", str(args.device), seconds, note=f"{n_params / 1e6:,.1f} M params, "
              f"{size / 2**30:.2f} GiB safetensors")
    return n_params


def base_overrides(args, path: Path, work: Path) -> list[str]:
    """The recipe of every stage below: recipes/tiny.yaml on the written checkpoint and the local data."""
    _, (samples, seq_len, micro) = WORKLOAD[args.shape]
    accelerator = "gpu" if args.device.startswith("cuda") else "cpu"
    precision = "bf16-true" if args.dtype == "bfloat16" else "32-true"
    return [f"model.name_or_path={path}", f"model.dtype={args.dtype}", f"trainer.accelerator={accelerator}",
            f"trainer.precision={precision}", f"calibration.seq_len={seq_len}", f"calibration.num_samples={samples}",
            f"calibration.batch_size={micro}", "~pruning.attention_layers", "~pruning.mlp_layers",
            f"pruning.ratio={RATIO[args.shape]}", "eval.ppl_datasets=[wikitext2]", f"eval.ppl_max_windows={args.ppl_windows}",
            "eval.tasks=[piqa]", f"eval.task_dir={ROOT / 'tests/fixtures/lm_eval_tasks'}", "eval.batch_size=auto",
            "eval.proxy_windows=8", f"output.dir={work / 'run'}"]


def calibration_stages(args, recipe, table: Table) -> dict:
    """Stages 2-3: load as a run loads; the bare loop vs calibrate on the same windows."""
    import torch
    from hook_bytes import count_hook_bytes, roofline, run_loop

    from gradprune import plugins
    from gradprune.calibration import activation_checkpointing, calibrate, calibration_mode
    from gradprune.data.sources import EmbeddedCorpus
    from gradprune.data.windows import draw_windows
    from gradprune.run import load_stage
    from gradprune.trainer import device_of

    loaded, seconds, peak, _ = measured(args.device, lambda: load_stage(recipe))
    table.add("load: from_pretrained", device_of(loaded.model), seconds, peak=peak, note="device_map=" + args.device)
    n, seq_len, micro = args.windows, args.seq_len, args.micro_batch
    ids = draw_windows(EmbeddedCorpus(), loaded.tokenizer, seq_len, n, args.seed).input_ids.to(args.device)
    batches = list(ids.split(micro))
    model, layers = loaded.model, loaded.layers
    run_loop(model, layers, batches[:1])  # warm-up: kernels, allocator
    out = {}
    _, bare_s, bare_peak, _ = measured(args.device, lambda: run_loop(model, layers, batches))
    out["bare"] = {"seconds": bare_s, "tokens_per_s": ids.numel() / bare_s, "peak_bytes": bare_peak}
    table.add(f"bare fwd+bwd ({n}x{seq_len}, mb {micro})", device_of(model), bare_s, ids.numel() / bare_s, bare_peak)

    def gradprune_calibrate(checkpointing: bool = False):
        cols = [plugins.COLLECTORS.build(c) for c in COLLECTORS]
        return calibrate(model, layers, ids, micro, {"taylor": plugins.IMPORTANCE.build("taylor")}, cols,
                         recipe.trainer, gradient_checkpointing=checkpointing)

    if args.checkpointing:  # the same pair with activation checkpointing
        with activation_checkpointing(model):
            calibration_mode(model, True)  # transformers checkpoints the layers whose training flag is set
            _, s, peak, _ = measured(args.device, lambda: run_loop(model, layers, batches))
            model.eval()
        out["bare_checkpointing"] = {"seconds": s, "tokens_per_s": ids.numel() / s, "peak_bytes": peak}
        table.add("bare fwd+bwd, checkpointing", device_of(model), s, ids.numel() / s, peak)
        _, s, peak, _ = measured(args.device, lambda: gradprune_calibrate(True))
        out["calibrate_checkpointing"] = {"seconds": s, "tokens_per_s": ids.numel() / s, "peak_bytes": peak}
        table.add("calibrate, checkpointing", device_of(model), s, ids.numel() / s, peak)
    res, cal_s, cal_peak, _ = measured(args.device, gradprune_calibrate)
    prunable = sum(p.numel() for lm in layers for p in lm.weights().values())
    hidden, inter, n_layers, heads, kv = SHAPES[args.shape]
    shape = dict(vocab_size=VOCAB, hidden_size=hidden, intermediate_size=inter, num_hidden_layers=n_layers,
                 num_attention_heads=heads, num_key_value_heads=kv)
    per_param = count_hook_bytes("taylor vector + stats", getattr(torch, args.dtype), shape)["bytes"]
    predicted = roofline(per_param, prunable, sum(p.numel() for p in model.parameters()), micro * seq_len)[2]
    speed = (ids.numel() / cal_s) / out["bare"]["tokens_per_s"]
    out["calibrate"] = {"seconds": cal_s, "tokens_per_s": ids.numel() / cal_s, "peak_bytes": cal_peak,
                        "loop_vs_bare": 1 / speed, "predicted_h100": predicted, "hook_bytes_per_param": per_param,
                        "mean_gradient_buffer_bytes": 4 * prunable, "device": res.device}
    table.add("calibrate (taylor + 4 stats)", res.device, cal_s, ids.numel() / cal_s, cal_peak,
              note=f"time {1 / speed:.3f}x bare (H100 roofline {predicted:.3f}x at {per_param:.0f} B/param); "
                   f"+{4 * prunable / 2**30:.2f} GiB mean-gradient buffer")
    return out


def search_stages(args, overrides: list[str], work: Path, table: Table) -> dict:
    """Stage 4: two trials of ``gradprune search``, back to back in this process, each one's peak."""
    import yaml

    import gradprune.run as run_module
    from gradprune.cli import main as cli

    spec = {"base": str(ROOT / "recipes/tiny.yaml"), "overrides": overrides, "grid": {"calibration.seed": [0, 1]},
            "sampler": "grid", "output_dir": str(work / "search")}
    spec_path = work / "smoke_search.yaml"
    spec_path.write_text(yaml.safe_dump(spec))
    trials: list[dict] = []
    inner = run_module.run_experiment

    def watched(*a, **kw):
        out, seconds, above, peak = measured(args.device, lambda: inner(*a, **kw), collect=False)
        trials.append({"seconds": seconds, "peak_bytes": peak, "peak_above_start_bytes": above})
        return out

    run_module.run_experiment = watched
    try:
        t0 = time.perf_counter()
        rc = cli(["search", str(spec_path)])
        total = time.perf_counter() - t0
    finally:
        run_module.run_experiment = inner
    if rc != 0 or len(trials) != 2:
        raise RuntimeError(f"gradprune search exited {rc} after {len(trials)} trial(s)")
    for i, trial in enumerate(trials):
        rec = json.loads((work / "search" / "trials" / f"trial_{i}" / "run.json").read_text())
        trial.update(timings=rec["timings"], devices=rec["devices"], metrics=rec["metrics"])
        dev = rec["devices"]
        table.add(f"search trial {i + 1} (whole run)", dev["calibration"], trial["seconds"], peak=trial["peak_bytes"],
                  note=f"ppl {rec['metrics'].get('ppl', float('nan')):.4g}, acc_piqa "
                       f"{rec['metrics'].get('acc_piqa', float('nan')):.3f}, ratio {rec['metrics']['pruning_ratio']:.3f}")
        seconds = rec["eval"].get("seconds", {})
        for stage, key, where in STAGE_ROWS:
            if key in rec["timings"]:
                table.add(f"  {stage}", dev.get(where, dev["calibration"]), rec["timings"][key])
        for part, label in (("ppl", "  perplexity wikitext2 (hub)"), ("zeroshot", "  lm-eval piqa (hub schema)")):
            if part in seconds:
                table.add(label, dev.get("eval", dev["calibration"]), seconds[part])
    print(f"  search total {total:.1f} s")
    return {"trials": trials, "seconds": total}


def parse_args(argv=None) -> argparse.Namespace:
    import torch

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--shape", choices=list(SHAPES), default="7b")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", choices=["bfloat16", "float32"], default=None,
                   help="default: bfloat16 on a GPU, float32 on a CPU")
    p.add_argument("--ppl-windows", type=int, default=None,
                   help="perplexity windows of 128 tokens per evaluation (default: 64 for 7b, else 8)")
    p.add_argument("--windows", type=int, help="calibration table: windows (default per shape)")
    p.add_argument("--seq-len", type=int, help="calibration table: tokens per window (default per shape)")
    p.add_argument("--micro-batch", type=int, help="calibration table: windows per micro-batch (default per shape)")
    p.add_argument("--checkpointing", action="store_true", help="also both loops with activation checkpointing")
    p.add_argument("--skip-search", action="store_true", help="stop after the calibration table")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--keep", action="store_true", help="keep the checkpoint and the search folder")
    p.add_argument("--json", help="also write the numbers to this JSON file")
    args = p.parse_args(argv)
    args.device = str(torch.device(args.device)) if args.device != "cuda" else "cuda:0"
    args.dtype = args.dtype or ("bfloat16" if args.device.startswith("cuda") else "float32")
    args.ppl_windows = args.ppl_windows or (64 if args.shape == "7b" else 8)
    (n, seq_len, micro), _ = WORKLOAD[args.shape]
    args.windows, args.seq_len, args.micro_batch = args.windows or n, args.seq_len or seq_len, args.micro_batch or micro
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="gpu-smoke-"))
    isolate(work)
    import shutil

    import torch

    print(f"gpu_smoke: {args.shape} Mistral shape, vocab {VOCAB:,}, {args.dtype} on {args.device}; torch "
          f"{torch.__version__}" + (f", {torch.cuda.get_device_name(args.device)}" if args.device.startswith("cuda")
                                    else "") + f"; work dir {work}", flush=True)
    from gradprune.recipe import load_recipe

    table, result, failures = Table(), {"args": vars(args)}, []
    t0 = time.perf_counter()
    try:
        path = work / "checkpoint"
        result["params"] = write_checkpoint(args, path, table)
        cache_wikitext(work)
        overrides = base_overrides(args, path, work)
        recipe = load_recipe(ROOT / "recipes/tiny.yaml", overrides)
        result["calibration"] = calibration_stages(args, recipe, table)
        gc.collect()
        if not args.skip_search:
            result["search"] = search_stages(args, overrides, work, table)
    except Exception as exc:  # noqa: BLE001 - the table so far, then the error, then exit 1
        failures.append(f"{type(exc).__name__}: {exc}")
        import traceback

        traceback.print_exc()
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    table.print()
    print(f"total {time.perf_counter() - t0:.1f} s")
    wrong = sorted({r["device"] for r in table.rows if r["device"].split(":")[0] != args.device.split(":")[0]})
    if wrong:
        failures.append(f"stages ran on {', '.join(wrong)}, not {args.device}")
    trials = result.get("search", {}).get("trials", [])
    if len(trials) == 2:
        growth = trials[1]["peak_bytes"] / max(trials[0]["peak_bytes"], 1)
        verdict = "ok" if growth <= 1.02 else "above"
        print(f"trial 2 peak / trial 1 peak = {growth:.4f} ({verdict}; target <= 1.02"
              + ("" if args.device.startswith("cuda") else ", CPU RSS: reported, not enforced") + ")")
        if verdict != "ok" and args.device.startswith("cuda"):
            failures.append(f"trial 2's peak is {growth:.3f}x trial 1's")
    result["table"] = table.rows
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2, default=str))
    for f in failures:
        print(f"FAILED: {f}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
