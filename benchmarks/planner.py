"""Planning time on a Mistral-7B-shaped score set: 32 layers x (8 KV groups + 14,336 MLP channels).

Run by hand (seconds; nothing is allocated for the weights: the Linear modules live on the meta device):

    .venv/bin/python benchmarks/planner.py
    .venv/bin/python benchmarks/planner.py --layers 80 --intermediate 28672 --hidden 8192   # Llama-2-70B shape

Times ``normalize_scores`` (z-score per layer and kind) + ``plan_pruning`` for the global and the local
scope, a few repeats each; the best and the median are printed. Target: < 1 s.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

from gradprune.importance.normalizers import ZScoreNormalizer, normalize_scores
from gradprune.models.adapters import LayerModules
from gradprune.pruning.planner import plan_pruning
from gradprune.recipe import PruningSection


def meta_layers(args: argparse.Namespace) -> list[LayerModules]:
    """``LayerModules`` of a Mistral-shaped model whose Linear weights are on the meta device."""
    hd = args.hidden // args.heads
    n_rep = args.heads // args.kv_heads

    def lin(i: int, o: int) -> nn.Linear:
        return nn.Linear(i, o, bias=False, device="meta")

    out = []
    for i in range(args.layers):
        out.append(LayerModules(
            index=i, q=lin(args.hidden, args.heads * hd), k=lin(args.hidden, args.kv_heads * hd),
            v=lin(args.hidden, args.kv_heads * hd), o=lin(args.heads * hd, args.hidden),
            gate=lin(args.hidden, args.intermediate), up=lin(args.hidden, args.intermediate),
            down=lin(args.intermediate, args.hidden), head_dim=hd, n_rep=n_rep, attn=nn.Module(), mlp=nn.Module()))
    return out


def fake_scores(layers: list[LayerModules], seed: int) -> dict[tuple[int, str], torch.Tensor]:
    """Heavy-tailed positive scores with a per-layer scale (like raw Taylor scores)."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for lm in layers:
        scale = 10 ** (lm.index / len(layers) * 2)
        out[(lm.index, "attn")] = torch.randn(lm.n_kv, generator=g).exp() * scale
        out[(lm.index, "mlp")] = torch.randn(lm.n_channels, generator=g).exp() * scale
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--layers", type=int, default=32)
    p.add_argument("--hidden", type=int, default=4096)
    p.add_argument("--intermediate", type=int, default=14336)
    p.add_argument("--heads", type=int, default=32)
    p.add_argument("--kv-heads", type=int, default=8)
    p.add_argument("--vocab", type=int, default=32768)
    p.add_argument("--ratio", type=float, default=0.2)
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args(argv)

    layers = meta_layers(args)
    per_layer = sum(lm.n_kv * lm.attn_group_params() + lm.n_channels * lm.mlp_group_params() for lm in layers)
    # embeddings + lm_head (untied) + norms: counted in the ratio's denominator, never pruned
    total = per_layer + 2 * args.vocab * args.hidden + (2 * args.layers + 1) * args.hidden
    scores = fake_scores(layers, seed=0)
    n_groups = sum(s.numel() for s in scores.values())
    print(f"{args.layers} layers x ({layers[0].n_kv} KV groups + {layers[0].n_channels:,} channels) = "
          f"{n_groups:,} groups; {total / 1e9:.2f} B params; ratio {args.ratio}")
    norm = ZScoreNormalizer()
    worst = 0.0
    for scope in ("global", "local"):
        section = PruningSection(ratio=args.ratio, scope=scope)
        times, norm_times = [], []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            normalized = normalize_scores(scores, norm)
            t1 = time.perf_counter()
            plan = plan_pruning(normalized, layers, total, section, "mistral")
            times.append(time.perf_counter() - t0)
            norm_times.append(t1 - t0)
        worst = max(worst, statistics.median(times))
        kept = sum(len(lp.mlp_kept or []) for lp in plan.layers)
        print(f"{scope:>6}: normalize + plan best {min(times):.3f} s, median {statistics.median(times):.3f} s "
              f"(normalize {statistics.median(norm_times):.3f} s); {kept:,} MLP channels kept")
    print(f"ratio of the slower scope's median planning time to the 1 s target: {worst:.3f}")


if __name__ == "__main__":
    main()
