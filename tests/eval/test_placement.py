"""``eval.device_map: auto``: the device map accelerate dispatches with (computed here without GPUs)."""

from __future__ import annotations

import pytest

from gradprune.errors import EvalError
from gradprune.eval.placement import device_map_for, spread
from tests.conftest import make_model


def _size(model) -> int:
    return sum(p.numel() * p.element_size() for p in model.parameters())


def test_whole_decoder_layers_are_spread_over_two_gpus():
    model = make_model("mistral", tie_word_embeddings=False)
    budget = int(_size(model) * 0.75)  # neither GPU holds it alone; both together do
    device_map = device_map_for(model, {0: budget, 1: budget})
    assert set(device_map.values()) == {0, 1}
    layers = [k for k in device_map if k.startswith("model.layers.")]
    assert layers and all(k.count(".") == 2 for k in layers)  # never inside a decoder layer
    assert device_map["model.embed_tokens"] == 0 and device_map["lm_head"] == 1


def test_a_model_the_gpus_cannot_hold_is_refused_not_offloaded():
    model = make_model("mistral", tie_word_embeddings=False)
    budget = int(_size(model) * 0.3)
    with pytest.raises(EvalError, match=r"does not fit the memory of GPUs \[0, 1\].*offloaded"):
        device_map_for(model, {0: budget, 1: budget})


def test_without_gpus_the_model_stays_where_it_is():
    model = make_model("mistral")
    assert spread(model) is model
    assert {p.device.type for p in model.parameters()} == {"cpu"}
