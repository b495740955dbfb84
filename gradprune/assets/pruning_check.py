"""Check that the embedded model is a useful pruning testbed: structure removal must cost accuracy,
and calibration settings must change which structures are kept.

    python -m gradprune.assets.pruning_check [--assets DIR] [--out FILE]

Self-contained on purpose (masking by zeroing weights, not the package's planner and surgery), so the
shipped assets can be judged independently of the code they are used to test.
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

from gradprune.assets import ASSETS_DIR

RATIO = 0.5


def calibration_batches(tokenizer, text: str, seq_len: int, num_samples: int, seed: int, batch_size: int = 8):
    """`num_samples` windows of `seq_len` tokens at seeded random offsets of `text`, batched."""
    import torch

    ids = torch.tensor(tokenizer(text)["input_ids"], dtype=torch.long)
    gen = torch.Generator().manual_seed(seed)
    starts = torch.randint(0, ids.numel() - seq_len, (num_samples,), generator=gen)
    windows = torch.stack([ids[s : s + seq_len] for s in starts.tolist()])
    return windows.split(batch_size)


def taylor_scores(model, batches) -> dict[str, list]:
    """First-order Taylor group scores |sum(w * dL/dw)| per layer, for MLP channels and KV groups."""
    model.zero_grad(set_to_none=True)
    for batch in batches:
        # sum over batches: the accumulated gradient of the mean calibration loss, up to a constant
        model(input_ids=batch, labels=batch).loss.backward()
    cfg = model.config
    hd = cfg.hidden_size // cfg.num_attention_heads
    per_kv = cfg.num_attention_heads // cfg.num_key_value_heads
    mlp, kv = [], []
    for layer in model.model.layers:
        m, a = layer.mlp, layer.self_attn

        def wg(lin):
            return (lin.weight * lin.weight.grad).detach()

        mlp.append((wg(m.gate_proj).sum(1) + wg(m.up_proj).sum(1) + wg(m.down_proj).sum(0)).abs())
        q, k, v, o = wg(a.q_proj).sum(1), wg(a.k_proj).sum(1), wg(a.v_proj).sum(1), wg(a.o_proj).sum(0)
        kv.append((q.view(-1, per_kv * hd).sum(1) + k.view(-1, hd).sum(1) + v.view(-1, hd).sum(1)
                   + o.view(-1, per_kv * hd).sum(1)).abs())
    model.zero_grad(set_to_none=True)
    return {"mlp": mlp, "kv": kv}


def keep_sets(scores: list, ratio: float, seed: int | None = None) -> list[list[int]]:
    """Per layer, the kept indices: highest scores (or a seeded random subset when `seed` is given)."""
    import torch

    kept = []
    for i, s in enumerate(scores):
        n_keep = s.numel() - int(round(s.numel() * ratio))
        if seed is None:
            order = torch.argsort(s, descending=True)
        else:
            order = torch.randperm(s.numel(), generator=torch.Generator().manual_seed(seed * 1000 + i))
        kept.append(sorted(order[:n_keep].tolist()))
    return kept


def masked_copy(model, mlp_keep: list[list[int]], kv_keep: list[list[int]] | None):
    """A copy of `model` whose removed MLP channels (and KV groups with their query heads) are zeroed."""
    import torch

    pruned = copy.deepcopy(model)
    cfg = model.config
    hd = cfg.hidden_size // cfg.num_attention_heads
    per_kv = cfg.num_attention_heads // cfg.num_key_value_heads
    with torch.no_grad():
        for li, layer in enumerate(pruned.model.layers):
            m = layer.mlp
            drop = sorted(set(range(m.gate_proj.out_features)) - set(mlp_keep[li]))
            m.gate_proj.weight[drop] = 0
            m.up_proj.weight[drop] = 0
            m.down_proj.weight[:, drop] = 0
            if kv_keep is None:
                continue
            a = layer.self_attn
            for g in set(range(cfg.num_key_value_heads)) - set(kv_keep[li]):
                a.k_proj.weight[g * hd : (g + 1) * hd] = 0
                a.v_proj.weight[g * hd : (g + 1) * hd] = 0
                rows = slice(g * per_kv * hd, (g + 1) * per_kv * hd)
                a.q_proj.weight[rows] = 0
                a.o_proj.weight[:, rows] = 0
    return pruned


def jaccard(a: list[list[int]], b: list[list[int]]) -> float:
    """Jaccard similarity of two kept sets pooled over layers."""
    sa = {(i, j) for i, layer in enumerate(a) for j in layer}
    sb = {(i, j) for i, layer in enumerate(b) for j in layer}
    return len(sa & sb) / len(sa | sb)


def measure(model, tokenizer, root: Path) -> dict:
    """Perplexity on ppl.txt (seq 128) and lm-eval accuracy, flattened to one row."""
    from gradprune.assets.evaluate import evaluate_tasks, perplexity

    row = {"ppl": perplexity(model, tokenizer, (root / "corpus" / "ppl.txt").read_text("utf-8"), seq_len=128)}
    tasks = evaluate_tasks(model, tokenizer, tasks_dir=root / "tasks")
    row.update({f"acc_{t}": r["acc"] for t, r in tasks.items()})
    row["acc_mean"] = sum(r["acc"] for r in tasks.values()) / len(tasks)
    return row


def run_checks(model, tokenizer, root: Path, num_samples: int) -> dict:
    """Dense vs Taylor vs random at 50 %, and the kept-set overlap across window lengths and seeds."""
    text = (root / "corpus" / "calibration.txt").read_text("utf-8")
    calib = {(L, s): taylor_scores(model, calibration_batches(tokenizer, text, L, num_samples, s))
             for L, s in [(128, 0), (128, 1), (16, 0)]}
    keeps = {k: {part: keep_sets(sc[part], RATIO) for part in ("mlp", "kv")} for k, sc in calib.items()}
    rand = {part: keep_sets(calib[(128, 0)][part], RATIO, seed=0) for part in ("mlp", "kv")}
    rows = {"dense": measure(model, tokenizer, root)}
    variants = {
        "taylor_mlp50_seq128_seed0": (keeps[(128, 0)]["mlp"], None),
        "taylor_mlp50_seq128_seed1": (keeps[(128, 1)]["mlp"], None),
        "taylor_mlp50_seq16_seed0": (keeps[(16, 0)]["mlp"], None),
        "random_mlp50_seed0": (rand["mlp"], None),
        "taylor_mlp50_kv50_seq128_seed0": (keeps[(128, 0)]["mlp"], keeps[(128, 0)]["kv"]),
        "random_mlp50_kv50_seed0": (rand["mlp"], rand["kv"]),
    }
    for name, (mlp_keep, kv_keep) in variants.items():
        rows[name] = measure(masked_copy(model, mlp_keep, kv_keep), tokenizer, root)
        print(name, json.dumps(rows[name]), flush=True)
    overlap = {
        "mlp_jaccard_seq128_vs_seq16": jaccard(keeps[(128, 0)]["mlp"], keeps[(16, 0)]["mlp"]),
        "mlp_jaccard_seed0_vs_seed1": jaccard(keeps[(128, 0)]["mlp"], keeps[(128, 1)]["mlp"]),
        "mlp_jaccard_taylor_vs_random": jaccard(keeps[(128, 0)]["mlp"], rand["mlp"]),
        "kv_keep_seq128_seed0": keeps[(128, 0)]["kv"],
        "kv_keep_seq16_seed0": keeps[(16, 0)]["kv"],
        "kv_keep_seq128_seed1": keeps[(128, 1)]["kv"],
    }
    return {"ratio": RATIO, "num_samples": num_samples, "results": rows, "overlap": overlap}


def main(argv: list[str] | None = None) -> dict:
    """Load the model, run the checks, print and write them as JSON."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    p = argparse.ArgumentParser(prog="python -m gradprune.assets.pruning_check", description=__doc__.splitlines()[0])
    p.add_argument("--assets", type=Path, default=ASSETS_DIR, help="folder with model/, corpus/ and tasks/")
    p.add_argument("--out", type=Path, default=None, help="JSON file (default: <assets>/model/pruning_check.json)")
    p.add_argument("--num-samples", type=int, default=64)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    t0 = time.time()
    model = AutoModelForCausalLM.from_pretrained(args.assets / "model").eval()
    tokenizer = AutoTokenizer.from_pretrained(args.assets / "model")
    report = run_checks(model, tokenizer, args.assets, args.num_samples)
    report["wall_s"] = round(time.time() - t0, 1)
    out = args.out or args.assets / "model" / "pruning_check.json"
    out.write_text(json.dumps(report, indent=2) + "\n", "utf-8")
    print(json.dumps({k: v for k, v in report.items() if k != "overlap"}, indent=2))
    print(json.dumps({k: v for k, v in report["overlap"].items() if "jaccard" in k}, indent=2))
    return report


if __name__ == "__main__":
    main()
