"""Ranking accuracy of cheaper calibration settings: per-sample vs micro-batch Fisher, bf16 vs fp32.

Run by hand (a tiny Mistral-shaped model, briefly trained on a synthetic Markov-chain language so
that its gradients have structure; 2-6 min on 2 CPU cores, most of it the training):

    .venv/bin/python benchmarks/ranking.py
    .venv/bin/python benchmarks/ranking.py --samples 128 --micro 4 8 16 --model path/to/hf_model_dir

Compared against a reference run (exact per-sample Fisher, fp32), for each setting:

* Spearman rank correlation of the group scores, within each (layer, kind) (mean over them) and of
  all groups after per-layer z-score normalization (what the global planner ranks);
* Jaccard overlap of the groups removed by a global 20 % / 50 % plan;
* the median relative difference of the raw scores;
* calibration CPU time (one thread, best of 3: the machine's other load only adds to it).

A second calibration draw (other windows, same setting as the reference) gives the noise floor: a
cheaper setting is good enough when it moves the ranking less than redrawing the data does.
"""

from __future__ import annotations

import argparse
import time
import warnings

import torch

from gradprune import plugins
from gradprune.calibration import calibrate
from gradprune.importance.normalizers import ZScoreNormalizer, normalize_scores
from gradprune.models.adapters import get_adapter
from gradprune.pruning.planner import plan_pruning
from gradprune.recipe import PruningSection, TrainerSection


def markov_tokens(n: int, length: int, vocab: int, seed: int) -> torch.Tensor:
    """Windows from a sparse random Markov chain (each token has 4 likely successors)."""
    g = torch.Generator().manual_seed(1234)  # the same "language" for every draw
    succ = torch.randint(0, vocab, (vocab, 4), generator=g)
    probs = torch.tensor([0.55, 0.25, 0.12, 0.08])
    g = torch.Generator().manual_seed(seed)
    out = torch.empty(n, length, dtype=torch.long)
    out[:, 0] = torch.randint(0, vocab, (n,), generator=g)
    for t in range(1, length):
        pick = torch.multinomial(probs, n, replacement=True, generator=g)
        noise = torch.rand(n, generator=g) < 0.05
        nxt = succ[out[:, t - 1], pick]
        out[:, t] = torch.where(noise, torch.randint(0, vocab, (n,), generator=g), nxt)
    return out


def tiny_model(args: argparse.Namespace) -> torch.nn.Module:
    """A GQA Mistral (hidden 128, 4 layers, 8 q / 2 KV heads, MLP 344), trained ``--train-steps`` steps."""
    if args.model:
        from transformers import AutoModelForCausalLM

        return AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32).eval()
    from transformers import MistralConfig, MistralForCausalLM

    torch.manual_seed(args.seed)
    model = MistralForCausalLM(MistralConfig(
        vocab_size=args.vocab, hidden_size=128, intermediate_size=344, num_hidden_layers=4, num_attention_heads=8,
        num_key_value_heads=2, max_position_embeddings=256, tie_word_embeddings=True))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    data = markov_tokens(args.train_steps * 16, args.seq_len, args.vocab, seed=10_000)
    model.train()
    for step, batch in enumerate(data.split(16)):
        for group in opt.param_groups:
            group["lr"] = 3e-3 * min(1.0, (step + 1) / 20)
        loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    print(f"tiny model trained {args.train_steps} steps, final loss {loss.item():.3f}", flush=True)
    return model.eval()


REPEATS = 3


def run(model, ids: torch.Tensor, estimator: str, params: dict, micro: int, precision: str = "32-true"):
    """Calibrate ``REPEATS`` times; returns (scores, best CPU time: one thread, other load only adds)."""
    layers = get_adapter(model).layers(model)
    cfg = TrainerSection(accelerator="cpu", devices=1, precision=precision)
    best = float("inf")
    for _ in range(REPEATS):
        est = plugins.IMPORTANCE.build(estimator, params)
        t0 = time.process_time()
        res = calibrate(model, layers, ids, micro, {"e": est}, [], cfg)
        best = min(best, time.process_time() - t0)
    return res.scores["e"], best


def spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    """Spearman rank correlation (average ranks for ties)."""
    from scipy.stats import spearmanr

    return float(spearmanr(a.double().numpy(), b.double().numpy()).statistic)


def removed(model, scores, ratio: float) -> set[tuple[int, str, int]]:
    """Groups a global plan at ``ratio`` removes, after per-layer z-score normalization."""
    layers = get_adapter(model).layers(model)
    total = get_adapter(model).count_params(model)
    plan = plan_pruning(normalize_scores(scores, ZScoreNormalizer()), layers, total,
                        PruningSection(ratio=ratio, scope="global"), model.config.model_type)
    out = set()
    for lp, lm in zip(plan.layers, layers, strict=True):
        if lp.attn_kept is not None:
            out |= {(lp.layer, "attn", i) for i in range(lm.n_kv) if i not in lp.attn_kept}
        if lp.mlp_kept is not None:
            out |= {(lp.layer, "mlp", i) for i in range(lm.n_channels) if i not in lp.mlp_kept}
    return out


def compare(model, ref, other) -> dict[str, float]:
    """Spearman (within layers, and global after z-score) and removed-set Jaccard at 20 % / 50 %."""
    within = [spearman(ref[k], other[k]) for k in sorted(ref) if ref[k].numel() > 2]
    norm = ZScoreNormalizer()
    flat_ref = torch.cat([norm(ref[k].float()) for k in sorted(ref)])
    flat_other = torch.cat([norm(other[k].float()) for k in sorted(ref)])
    a, b = torch.cat([ref[k].double() for k in sorted(ref)]), torch.cat([other[k].double() for k in sorted(ref)])
    rel = ((b - a).abs() / a.abs().clamp_min(1e-30)).median()
    out = {"spearman_layer": sum(within) / len(within), "spearman_global": spearman(flat_ref, flat_other),
           "median_rel_diff": float(rel)}
    for ratio in (0.2, 0.5):
        a, b = removed(model, ref, ratio), removed(model, other, ratio)
        out[f"jaccard_{int(ratio * 100)}"] = len(a & b) / max(len(a | b), 1)
    return out


def row(label: str, seconds: float, ref_seconds: float, m: dict[str, float], rel: bool = True) -> str:
    """One result line; ``rel`` adds the median relative score difference (meaningless across scales)."""
    out = (f"{label:<36} {seconds:6.2f} s ({seconds / ref_seconds:5.2f}x)  spearman layer {m['spearman_layer']:.4f}"
           f"  global {m['spearman_global']:.4f}  jaccard@20% {m['jaccard_20']:.3f}  @50% {m['jaccard_50']:.3f}")
    return out + (f"  median |rel diff| {m['median_rel_diff']:.1e}" if rel else "")


def fisher_tradeoff(model, args) -> None:
    """Exact per-sample Fisher vs the micro-batch approximation, with the calibration-noise floor."""
    ids = markov_tokens(args.samples, args.seq_len, args.vocab, seed=args.seed + 1)
    ids2 = markov_tokens(args.samples, args.seq_len, args.vocab, seed=args.seed + 2)
    run(model, ids[:8], "fisher", {}, 8)  # warm-up
    ref, t_ref = run(model, ids, "fisher", {"per_sample": True}, max(args.micro))
    print(f"\nper-sample vs micro-batch Fisher ({args.samples} samples x {args.seq_len} tokens); reference: "
          f"exact per-sample Fisher, {t_ref:.2f} s (micro-batch Fisher is ~1/B of it in scale: only ranks compare)")
    for micro in args.micro:
        s, t = run(model, ids, "fisher", {}, micro)
        print(row(f"fisher micro-batch {micro}", t, t_ref, compare(model, ref, s), rel=False), flush=True)
    s, t = run(model, ids2, "fisher", {"per_sample": True}, max(args.micro))
    print(row("per-sample, other calibration draw", t, t_ref, compare(model, ref, s), rel=False), flush=True)
    for micro in args.micro:
        s, t = run(model, ids2, "fisher", {}, micro)
        print(row(f"micro-batch {micro}, other draw", t, t_ref, compare(model, ref, s), rel=False), flush=True)


def bf16_agreement(model, args) -> None:
    """bf16 weights and activations (fp32 accumulators) vs fp32, per estimator."""
    import copy

    ids = markov_tokens(args.samples, args.seq_len, args.vocab, seed=args.seed + 1)
    ids2 = markov_tokens(args.samples, args.seq_len, args.vocab, seed=args.seed + 2)
    model_bf16 = copy.deepcopy(model).to(torch.bfloat16)
    micro = max(args.micro)
    print(f"\nbf16 (model.dtype bfloat16, trainer.precision bf16-true) vs fp32, micro-batch {micro}")
    for name, params in (("taylor", {}), ("fisher", {}), ("taylor_mix", {})):
        ref, t_ref = run(model, ids, name, params, micro)
        s, t = run(model_bf16, ids, name, params, micro, precision="bf16-true")
        print(row(f"ratio bf16/fp32 {name}", t, t_ref, compare(model, ref, s)), flush=True)
        s, t = run(model, ids2, name, params, micro)
        print(row(f"  fp32 {name}, other draw (noise)", t, t_ref, compare(model, ref, s)), flush=True)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=None, help="a local HF model dir (default: a tiny model trained here)")
    p.add_argument("--vocab", type=int, default=512)
    p.add_argument("--train-steps", type=int, default=200)
    p.add_argument("--samples", type=int, default=64)
    p.add_argument("--seq-len", type=int, default=64)
    p.add_argument("--micro", type=int, nargs="+", default=[4, 8, 16], help="micro-batch sizes to compare")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--skip", nargs="*", default=[], choices=["fisher", "bf16"])
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (0: torch's choice)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    model = tiny_model(args)
    if "fisher" not in args.skip:
        fisher_tradeoff(model, args)
    if "bf16" not in args.skip:
        bf16_agreement(model, args)


if __name__ == "__main__":
    main()
