"""Surgery time of a random plan on a >= 1 B-parameter Llama-shaped model built on CPU from a config.

Run by hand (needs ~2.5 GB of RAM in bf16, ~5 GB in fp32):

    .venv/bin/python benchmarks/surgery.py                 # TinyLlama-1.1B shape, bf16, 20 %
    .venv/bin/python benchmarks/surgery.py --dtype float32 --layers 16

The plan drops a random ``ratio`` of the MLP channels of every layer and one KV group in a random
``ratio * 4`` share of the layers (plus the forward of a short input, before and after, as a sanity
check). Weights are filled with random values first so that the pages are resident, as in a loaded model.

Host memory: with ``--from-disk`` the model is saved as safetensors and loaded back through gradprune's
own loader (``from_pretrained``, as a run loads it), and the RSS high-water mark during ``apply_plan`` is
compared with the RSS before it plus the largest single layer's prunable weights: the bound a run must
stay under (the dense model + one layer's copies).
"""

from __future__ import annotations

import argparse
import gc
import random
import re
import resource
import tempfile
import time

import torch

from gradprune.cut.surgery import apply_plan
from gradprune.models.adapters import get_adapter
from gradprune.models.shard_loading import params_on_meta
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


def _status(key: str) -> int:
    with open("/proc/self/status") as f:
        return int(re.search(rf"{key}:\s+(\d+) kB", f.read()).group(1)) * 1024


def reset_peak() -> int:
    """Reset the RSS high-water mark to the current RSS (Linux); returns the current RSS."""
    gc.collect()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    return _status("VmRSS")


def saved_then_loaded(args: argparse.Namespace) -> torch.nn.Module:
    """Build, save as safetensors, free, and load back with gradprune's loader (the run's code path)."""
    from transformers import AutoTokenizer

    from gradprune.assets import MODEL_DIR
    from gradprune.models.loading import load_model
    from gradprune.recipe import ModelSection

    folder = tempfile.mkdtemp(prefix="surgery-bench-")
    build(args).save_pretrained(folder)  # the built model is garbage once saved
    AutoTokenizer.from_pretrained(MODEL_DIR).save_pretrained(folder)
    gc.collect()
    loaded, _ = load_model(ModelSection(name_or_path=folder, dtype=args.dtype))
    return loaded


def largest_layer_bytes(model: torch.nn.Module) -> int:
    layers = get_adapter(model).layers(model)
    return max(sum(p.numel() * p.element_size() for p in lm.weights().values()) for lm in layers)


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
    parser.add_argument("--from-disk", action="store_true", help="save and reload through gradprune's loader first")
    args = parser.parse_args()

    t0 = time.perf_counter()
    model = saved_then_loaded(args) if args.from_disk else build(args)
    adapter = get_adapter(model)
    before = adapter.count_params(model)
    print(f"built {before / 1e9:.3f} B params ({args.dtype}) in {time.perf_counter() - t0:.1f} s")
    tokens = torch.randint(0, args.vocab, (1, 32), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        model(tokens)

    plan = random_plan(model, args.ratio, args.seed)
    layer_bytes = largest_layer_bytes(model)
    rss_before = reset_peak()
    t0 = time.perf_counter()
    apply_plan(model, plan)
    elapsed = time.perf_counter() - t0
    peak_during = _status("VmHWM")
    rss_after = reset_peak()
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
    excess = peak_during - rss_before
    print(f"host RSS during apply_plan: before {rss_before / 2**30:.3f} GiB, peak {peak_during / 2**30:.3f} GiB "
          f"(+{excess / 2**20:.0f} MiB), after {rss_after / 2**30:.3f} GiB; largest layer's prunable weights "
          f"{layer_bytes / 2**20:.0f} MiB -> peak excess / one layer = {excess / layer_bytes:.2f} (bound: <= 1)")


if __name__ == "__main__":
    main()
