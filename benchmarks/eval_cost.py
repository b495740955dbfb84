"""Evaluation per trial (forward passes, tokens) on the 7 zero-shot tasks, and the predicted time of a
15-point Mistral-7B search on one H100 with and without ``evaluation: halving``.

    .venv/bin/python benchmarks/eval_cost.py          # ~1-3 min here (lm-eval on 7 local fixtures)

Counted here: lm-eval (HFLM, as gradprune calls it) runs each task on its local fixture
(tests/fixtures/lm_eval_tasks: lm-eval's own task code on items in the data set's schema) with the embedded
model, one row per forward pass; a hook on the model counts the rows (lm-eval scores the one-token
continuations of a context, boolq's " yes"/" no", in one row) and the requests, per item, scaled to the
real test sizes. The fixtures' items are short, so the tokens per row of the real items are assumptions
(printed; mean context + continuation with a ~32 K-vocabulary Llama/Mistral tokenizer, from the data sets'
reported lengths), as are the hardware rates of the prediction:

* forward passes of the model (evaluation, calibration) at 50 % of 790 TFLOP/s bf16: 2·N·T FLOP per
  forward, 6·N·T per forward + backward; the calibration hooks at 80 % of 3.35 TB/s
  (benchmarks/hook_bytes.py's bytes per parameter for first-order Taylor + statistics);
* per trial: the checkpoint loaded (``--load-s``), set-up (Trainer, lm-eval task building, surgery:
  ``--overhead-s``); the dense evaluation once per search (its metrics are cached);
* lm-eval's batch: ``eval.max_batch_size: auto`` on an 80 GB GPU (half the memory left after the 14.5 GB of
  weights), so its batch-size search runs no trial forward passes; rows of one batch are padded to its
  longest (sorted by length: ``--padding`` extra tokens);
* synchronous halving (the search's default schedule) with min_fraction 1/8 and η = 2 (the defaults) and the
  1/16, η = 4 of recipes/mistral_param_search.yaml: at each rung the best ⌊n/η⌋ points go on (a lower bound:
  points within k_stderr standard errors of them go on too; at most every point, the full cost); every
  point evaluates perplexity once; a point's next rung is another trial (load and set-up again, its
  calibration and perplexity taken from the store).
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

#: items in the real test (validation) splits lm-eval scores
REAL_ITEMS = {"boolq": 3270, "piqa": 1838, "hellaswag": 10042, "winogrande": 1267, "arc_easy": 2376,
              "arc_challenge": 1172, "openbookqa": 500}
#: assumed mean tokens per row (context + continuation) on the real items, and where the number comes from
REAL_TOKENS_PER_ROW = {
    "boolq": (165, "passage ~108 words + question ~9 words (BoolQ paper), prompt template"),
    "piqa": (42, "goal ~8 words + solution ~21 words (PIQA paper), 'Question: .. Answer:'"),
    "hellaswag": (90, "ActivityNet contexts ~40 tokens, WikiHow (~1/4 of the items) ~100, ending ~25 tokens"),
    "winogrande": (25, "sentence ~20 words, split at the blank (partial scoring)"),
    "arc_easy": (34, "question ~20 words + answer ~5 words, 'Question: .. Answer:'"),
    "arc_challenge": (40, "question ~25 words + answer ~6 words"),
    "openbookqa": (20, "question stem ~11 words + answer ~3 words"),
}
N_TOTAL, N_PRUNABLE, WEIGHT_BYTES = 7.248e9, 6.979e9, 14.5e9  # Mistral-7B-v0.3, bf16
VOCAB, HIDDEN, INTER = 32768, 4096, 14336
GPU_BYTES = 80e9
FLOPS, MFU, HBM, BW = 790e12, 0.50, 3.35e12, 0.80
#: perplexity texts at seq_len 128 (Mistral-tokenized, approximately): WikiText-2 test, PTB validation
PPL_TOKENS = {"wikitext2": 340_000, "ptb": 100_000}
#: the study's grid (recipes/mistral_param_search.yaml): seq_len × num_samples, micro-batch 8
GRID_SEQ, GRID_SAMPLES, MICRO = (16, 32, 64, 128, 256), (128, 256, 512), 8


def count_rows(tasks: list[str]) -> dict[str, dict]:
    """Per task: items, requests and forward rows lm-eval makes of the local fixture, and their tokens."""
    import os
    import tempfile

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("GRADPRUNE_CACHE", tempfile.mkdtemp(prefix="eval-cost-cache-"))
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from gradprune.assets import MODEL_DIR
    from gradprune.eval.zeroshot import evaluate_zeroshot
    from gradprune.recipe import EvalSection

    model = AutoModelForCausalLM.from_pretrained(MODEL_DIR).eval()
    tok = AutoTokenizer.from_pretrained(MODEL_DIR)
    seen = {"rows": 0, "tokens": 0, "passes": 0}

    def count(_module, args, kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        seen["rows"] += ids.shape[0]
        seen["tokens"] += ids.numel()
        seen["passes"] += 1

    model.register_forward_pre_hook(count, with_kwargs=True)
    out = {}
    for task in tasks:
        seen.update(rows=0, tokens=0, passes=0)
        cfg = EvalSection(run="zeroshot", tasks=[task], task_dir=str(ROOT / "tests/fixtures/lm_eval_tasks"),
                          batch_size=1, ppl_datasets=[], proxy_windows=0)
        _, info = evaluate_zeroshot(model, tok, cfg)
        items = info["n"][task]
        out[task] = {"items": items, "requests": info["requests"][task], "rows": seen["rows"],
                     "fixture_tokens": seen["tokens"]}
    return out


def rung_cost(points: int, min_fraction: float, eta: int) -> tuple[float, int]:
    """Synchronous halving, the best ⌊n/η⌋ going on at each rung (everyone while fewer than η compete:
    then the best one): (examples scored in units of one full evaluation, extra trials after the first
    rung)."""
    from gradprune.search.halving import rung_fractions

    fractions = rung_fractions(min_fraction, eta)
    n, scored, extra, previous = points, 0.0, 0, 0.0
    for r, f in enumerate(fractions):
        scored += n * (f - previous)
        extra += n if r else 0
        previous = f
        n = n // eta if n >= eta else 1
    return scored, extra


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--load-s", type=float, default=10.0, help="seconds to load the 14.5 GB checkpoint per trial")
    p.add_argument("--overhead-s", type=float, default=15.0, help="set-up seconds per trial (host side)")
    p.add_argument("--padding", type=float, default=0.10, help="padding tokens per real token in lm-eval batches")
    p.add_argument("--points", type=int, default=15)
    args = p.parse_args(argv)
    import torch
    from hook_bytes import MISTRAL_7B, count_hook_bytes

    from gradprune.eval.batching import sequences_per_batch

    counts = count_rows(list(REAL_ITEMS))
    budget = 0.5 * (GPU_BYTES - WEIGHT_BYTES)
    per_token_act = (4 * HIDDEN + 3 * INTER) * 2
    print("zero-shot evaluation per trial (rows: lm-eval forward rows; counted on the local fixtures, scaled "
          "to the real sizes)")
    print(f"{'task':<14}{'items':>7}{'req/item':>9}{'rows/item':>10}{'rows':>9}{'tok/row':>8}{'tokens':>12}"
          f"{'batch':>7}{'passes':>8}")
    tot_rows = tot_tokens = tot_passes = 0
    for task, n in REAL_ITEMS.items():
        c = counts[task]
        per_item = c["rows"] / c["items"]
        rows = per_item * n
        tok_row = REAL_TOKENS_PER_ROW[task][0]
        tokens = rows * tok_row * (1 + args.padding)
        # lm-eval sizes the batch at its longest request; here at twice the mean (a long tail)
        batch = sequences_per_batch(int(budget), 2 * tok_row, VOCAB, 4, per_token_act)
        passes = math.ceil(rows / batch)
        tot_rows, tot_tokens, tot_passes = tot_rows + rows, tot_tokens + tokens, tot_passes + passes
        print(f"{task:<14}{n:>7,}{c['requests'] / c['items']:>9.2f}{per_item:>10.2f}{rows:>9,.0f}{tok_row:>8}"
              f"{tokens:>12,.0f}{batch:>7}{passes:>8,}")
    print(f"{'all 7':<14}{sum(REAL_ITEMS.values()):>7,}{'':>9}{'':>10}{tot_rows:>9,.0f}{'':>8}{tot_tokens:>12,.0f}"
          f"{'':>7}{tot_passes:>8,}")
    print("(batch: rows per forward pass from half the memory an 80 GB GPU has left beside the weights, at twice "
          "the mean row; tokens include the padding)")
    for task, (_, why) in REAL_TOKENS_PER_ROW.items():
        print(f"  tokens/row {task}: {why}")

    # the prediction
    fwd = 2 * N_TOTAL / (MFU * FLOPS)  # seconds per forward token
    zs = tot_tokens * fwd
    ppl = sum(PPL_TOKENS.values()) * fwd
    per_param = count_hook_bytes("taylor vector + stats", torch.bfloat16, MISTRAL_7B)["bytes"]
    hooks_per_micro = per_param * N_PRUNABLE / (BW * HBM)
    calib = [(s, n, 3 * fwd * s * n + (n // MICRO) * hooks_per_micro) for s in GRID_SEQ for n in GRID_SAMPLES]
    calib_s = sum(c for *_, c in calib)
    points = args.points
    fixed = points * (args.load_s + args.overhead_s)
    dense = zs + ppl
    full = fixed + calib_s + points * (ppl + zs) + dense
    print(f"\npredicted {points}-point Mistral-7B search on one H100 (roofline; bare compute at {MFU:.0%} of "
          f"{FLOPS / 1e12:.0f} TFLOP/s bf16, hooks {per_param:.0f} B/param at {BW:.0%} of {HBM / 1e12:.2f} TB/s)")
    print(f"  per trial: load {args.load_s:.0f} s + set-up {args.overhead_s:.0f} s + calibration "
          f"{min(c for *_, c in calib):.1f}-{max(c for *_, c in calib):.1f} s + perplexity {ppl:.1f} s "
          f"({sum(PPL_TOKENS.values()):,} tokens) + zero-shot {zs:.0f} s ({tot_tokens:,.0f} tokens)")
    print(f"  dense evaluation once: {dense:.0f} s; calibration of all points: {calib_s:.0f} s")
    print(f"  full evaluation: {full / 60:.1f} min")
    for label, mf, eta in (("halving 1/8, eta 2 (defaults)", 0.125, 2), ("halving 1/16, eta 4 (the recipe's)",
                                                                        0.0625, 4)):
        scored, extra = rung_cost(points, mf, eta)
        total = fixed + extra * (args.load_s + args.overhead_s) + calib_s + points * ppl + scored * zs + dense
        print(f"  {label}: {scored:.2f} of {points} full zero-shot evaluations, {extra} extra trials -> "
              f"{total / 60:.1f} min (lower bound; at most {full / 60:.1f})")
    print("goal: <= 60 min with halving")
    return 0


if __name__ == "__main__":
    sys.exit(main())
