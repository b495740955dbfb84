"""Recovery's training throughput against a plain PyTorch loop on the same model, adapter and examples.

Run by hand (CPU, the embedded model pruned by 40 % with a stored plan or a fresh calibration):

    .venv/bin/python benchmarks/recovery.py                    # 30 steps of 8 × 128 tokens, 1 thread
    .venv/bin/python benchmarks/recovery.py --steps 60 --threads 2 --json out.json

The recipe's micro-batch is its whole batch (8), so both sides take one forward per step. Both sides
train the same LoRA adapter (r 8 on all 7 projections, the same seed and initial weights) on
the same examples in the same order with AdamW: gradprune's Lightning ``fit`` (scheduler, clipping,
accumulation bookkeeping, per-step records) and a bare ``forward → backward → step`` loop. The ratio of
their tokens per second is what the Lightning stage costs; the absolute numbers depend on the machine.
"""

from __future__ import annotations

import argparse
import json
import time


def _pruned_model(ratio: float):
    """The embedded model pruned by ``ratio`` (calibrated, cut, not evaluated) and its tokenizer."""
    from gradprune.recipe import load_recipe
    from gradprune.run import run_experiment

    recipe = load_recipe("recipes/tiny_recovery.yaml", [f"pruning.ratio={ratio}", "eval.run=none", "~recovery",
                                                         "calibration.num_samples=16"])
    out = run_experiment(recipe, keep_model=True)
    return out.model, out.tokenizer


def main() -> None:
    """Time both loops and print (or write) tokens per second and their ratio."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--ratio", type=float, default=0.4)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--json", default=None)
    args = p.parse_args()

    import torch

    from gradprune import plugins
    from gradprune.recipe import load_recipe
    from gradprune.recovery.module import fit_recovery
    from gradprune.recovery.stage import _attached, _training_set
    from gradprune.recovery.training_data import pad_batch

    torch.set_num_threads(args.threads)
    model, tok = _pruned_model(args.ratio)
    recipe = load_recipe("recipes/tiny_recovery.yaml", [f"recovery.params.max_steps={args.steps}"])
    method = plugins.RECOVERY.build("lora", recipe.recovery.params, "recovery.params")
    params = method.params
    data = _training_set(recipe, method, tok)
    tokens = args.steps * params.batch_size * params.cutoff_len
    result = {"steps": args.steps, "tokens": tokens, "threads": args.threads}

    def lightning() -> float:
        with _attached(method, model, params.seed) as trainable:
            t0 = time.perf_counter()
            fit = fit_recovery(model, trainable, data, params, recipe.trainer, tok.pad_token_id)
            return fit.tokens / (time.perf_counter() - t0)

    def plain() -> float:
        with _attached(method, model, params.seed) as trainable:
            optimizer = torch.optim.AdamW(trainable, lr=params.learning_rate)
            model.train()
            order = torch.randperm(len(data.examples), generator=torch.Generator().manual_seed(params.seed)).tolist()
            t0 = time.perf_counter()
            for step in range(args.steps):
                chosen = order[step * params.batch_size:(step + 1) * params.batch_size]
                batch = pad_batch([data.examples[i] for i in chosen], tok.pad_token_id)
                loss = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                             labels=batch["labels"], use_cache=False).loss
                loss.backward()
                optimizer.step()
                optimizer.zero_grad()
            seconds = time.perf_counter() - t0
            model.eval()
            return tokens / seconds

    # alternating, best of --repeats each: a shared machine's load changes from one minute to the next
    runs: dict[str, list[float]] = {"gradprune": [], "plain": []}
    for _ in range(args.repeats):
        runs["plain"].append(plain())
        runs["gradprune"].append(lightning())
    result["runs_tokens_per_s"] = runs
    result["gradprune_tokens_per_s"] = max(runs["gradprune"])
    result["plain_tokens_per_s"] = max(runs["plain"])
    result["ratio_gradprune_over_plain"] = result["gradprune_tokens_per_s"] / result["plain_tokens_per_s"]
    result["seconds_per_1000_tokens"] = 1000 / result["gradprune_tokens_per_s"]
    text = json.dumps(result, indent=1)
    print(text)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            fh.write(text + "\n")


if __name__ == "__main__":
    main()
