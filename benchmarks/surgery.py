"""Surgery time of a random plan on a >= 1 B-parameter Llama-shaped model built on CPU from a config.

Run by hand (needs ~2.5 GB of RAM in bf16, ~5 GB in fp32):

    .venv/bin/python benchmarks/surgery.py                 # TinyLlama-1.1B shape, bf16, 20 %
    .venv/bin/python benchmarks/surgery.py --dtype float32 --layers 16

The plan drops a random ``ratio`` of the MLP channels of every layer and one KV group in a random
``ratio * 4`` share of the layers (plus the forward of a short input, before and after, as a sanity
check). Weights are filled with random values first so that the pages are resident, as in a loaded model.
"""

from __future__ import annotations

import argparse
import random
import resource
import time

import torch

from gradprune.models.adapters import get_adapter
from gradprune.models.checkpoint import params_on_meta
from gradprune.models.surgery import apply_plan
from gradprune.pruning.plan import LayerPlan, Plan


def build(args: argparse.Namespace) -> torch.nn.Module:
    """The model, built on meta then materialised: skips transformers' slow per-module init."""
    from transformers import AutoModelForCausalLM, LlamaConfig

    config = LlamaConfig(
        vocab_size=args.vocab,
        hidden_size=args.hidden,
        intermediate_size=args.intermediate,
        num_hidden_layers=args.layers,
        num_attention_heads=args.heads,
        num_key_value_heads=args.kv_heads,
        max_position_embeddings=2048,
    )
    dtype = getattr(torch, args.dtype)
    with params_on_meta():
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    weights = {}
    for name, p in model.named_parameters():
        t = torch.empty_like(p, device="cpu")
        weights[name] = t.fill_(1.0) if name.endswith("norm.weight") else t.uniform_(-0.02, 0.02)
    model.load_state_dict(weights, assign=True)  # the rotary buffer stayed real (params_on_meta)
    return model.eval()


def random_plan(model: torch.nn.Module, ratio: float, seed: int) -> Plan:
    """Drop ``ratio`` of each layer's MLP channels and one KV group in ~``4 * ratio`` of the layers."""
    rng = random.Random(seed)
    layers = []
    for lm in get_adapter(model).layers(model):
        n_ch = lm.n_channels
        mlp = sorted(rng.sample(range(n_ch), n_ch - round(ratio * n_ch)))
        attn = None
        if lm.n_kv > 1 and rng.random() < min(1.0, ratio * 4):
            drop = rng.randrange(lm.n_kv)
            attn = [g for g in range(lm.n_kv) if g != drop]
        layers.append(LayerPlan(lm.index, attn, mlp))
    return Plan(model.config.model_type, layers, {"kind": "random", "ratio": ratio, "seed": seed})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=22)
    parser.add_argument("--hidden", type=int, default=2048)
    parser.add_argument("--intermediate", type=int, default=5632)
    parser.add_argument("--heads", type=int, default=32)
    parser.add_argument("--kv-heads", type=int, default=4)
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32", "float16"])
    parser.add_argument("--ratio", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    t0 = time.perf_counter()
    model = build(args)
    adapter = get_adapter(model)
    before = adapter.count_params(model)
    print(f"built {before / 1e9:.3f} B params ({args.dtype}) in {time.perf_counter() - t0:.1f} s")
    tokens = torch.randint(0, args.vocab, (1, 32), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        model(tokens)

    plan = random_plan(model, args.ratio, args.seed)
    t0 = time.perf_counter()
    apply_plan(model, plan)
    elapsed = time.perf_counter() - t0
    after = adapter.count_params(model)

    with torch.no_grad():
        logits = model(tokens).logits
    assert torch.isfinite(logits).all()
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    print(f"params before {before:,}  after {after:,}  removed {1 - after / before:.1%}")
    print(
        f"apply_plan: {elapsed:.2f} s for {len(plan.layers)} layers ({elapsed / len(plan.layers) * 1e3:.0f} ms/layer)"
    )
    print(f"peak RSS {peak_gb:.2f} GB; threads {torch.get_num_threads()}")


if __name__ == "__main__":
    main()
