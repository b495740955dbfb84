"""Tiny models of every supported architecture built offline from configs, and random plans for them (also used by tests/cut)."""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest
import torch

from gradprune.pruning.plan import LayerPlan, Plan

ARCHS = ("llama", "mistral", "qwen2", "qwen3", "gemma2", "gemma3_text")

# what each architecture needs beyond the common sizes: head_dim 8 where the default is not
# hidden // heads; sliding windows shorter than the test sequences (12 tokens + 6 generated) so that
# the sliding layers really differ from the full ones
_ARCH_OVERRIDES = {
    "qwen3": dict(head_dim=8),
    "gemma2": dict(head_dim=8, sliding_window=6, query_pre_attn_scalar=8),
    "gemma3_text": dict(
        head_dim=8, sliding_window=6, query_pre_attn_scalar=8,
        layer_types=["sliding_attention", "full_attention", "sliding_attention", "full_attention"],
    ),
}


def tiny_config(arch: str, n_kv: int = 2, tie: bool = False, **overrides):
    """hidden 64, 4 layers, 8 query heads of 8, MLP 96, vocab 200 (qwen2 has q/k/v biases; qwen3 and
    gemma3 per-head q/k norms; gemma2 and gemma3 soft-capping and sliding windows)."""
    from transformers import CONFIG_MAPPING

    cls = CONFIG_MAPPING[arch]
    kwargs = dict(
        vocab_size=200,
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=4,
        num_attention_heads=8,
        num_key_value_heads=n_kv,
        max_position_embeddings=128,
        tie_word_embeddings=tie,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )
    kwargs.update(_ARCH_OVERRIDES.get(arch, {}))
    kwargs.update(overrides)
    return cls(**kwargs)


def tiny_model(arch: str, seed: int = 0, **config_kwargs):
    """A randomly initialised tiny causal LM in eval mode (deterministic per seed)."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(tiny_config(arch, **config_kwargs)).eval()


def random_plan(config, seed: int) -> Plan:
    """Random kept sets; layer 1 loses every MLP channel and layer 2 every KV head; layer 3 may be absent."""
    rng = random.Random(seed)
    n_kv, n_ch = config.num_key_value_heads, config.intermediate_size

    def subset(n: int) -> list[int]:
        return sorted(rng.sample(range(n), rng.randint(1, n - 1)))

    layers = [
        LayerPlan(0, subset(n_kv), subset(n_ch)),
        LayerPlan(1, subset(n_kv), []),
        LayerPlan(2, [], subset(n_ch)),
    ]
    if rng.random() < 0.5:
        layers.append(LayerPlan(3, None, subset(n_ch)))
    rng.shuffle(layers)  # plan order must not matter
    return Plan(model_type=config.model_type, layers=layers, meta={"seed": seed})


def uniform_plan(config, n_kv: int, n_ch: int, seed: int = 0) -> Plan:
    """Every layer keeps ``n_kv`` random KV groups and ``n_ch`` random channels."""
    rng = random.Random(seed)
    layers = [
        LayerPlan(
            i,
            sorted(rng.sample(range(config.num_key_value_heads), n_kv)),
            sorted(rng.sample(range(config.intermediate_size), n_ch)),
        )
        for i in range(config.num_hidden_layers)
    ]
    return Plan(model_type=config.model_type, layers=layers, meta={})


@pytest.fixture
def make_model() -> Callable:
    return tiny_model


@pytest.fixture
def make_config() -> Callable:
    return tiny_config


@pytest.fixture
def make_plan() -> Callable:
    return random_plan


@pytest.fixture
def make_uniform_plan() -> Callable:
    return uniform_plan


@pytest.fixture
def tokens() -> torch.Tensor:
    return torch.randint(3, 200, (2, 12), generator=torch.Generator().manual_seed(0))
