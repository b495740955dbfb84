"""Normalizer scope: per-kind pools keep a plan with 2 KV groups per layer responsive to the scores.

Reference model: the Qwen2.5-0.5B shape (24 layers x 2 KV groups + 4,864 channels), built on the meta
device (no weights). Its two KV groups per layer are the case where per-layer z-scores degenerate.
"""

from __future__ import annotations

import warnings

import pytest
import torch

from gradprune import plugins
from gradprune.errors import PluginError
from gradprune.importance.normalizers import NormalizerWarning, ZScoreNormalizer, normalize_scores
from gradprune.pruning.planner import plan_pruning
from gradprune.recipe import PruningSection


@pytest.fixture(scope="module")
def qwen05():
    """(layers, total params) of a Qwen2.5-0.5B-shaped model on the meta device."""
    import transformers as tf

    from gradprune.models.adapters import get_adapter

    cfg = tf.Qwen2Config(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
                         num_key_value_heads=2, vocab_size=151936, tie_word_embeddings=True)
    with torch.device("meta"):
        model = tf.AutoModelForCausalLM.from_config(cfg)
    adapter = get_adapter(model)
    return adapter.layers(model), adapter.count_params(model)


def _scores(layers, seed: int = 1) -> dict:
    """Heavy-tailed positive scores, like raw Taylor scores (same distribution for every layer and kind)."""
    g = torch.Generator().manual_seed(seed)
    return {(lm.index, kind): torch.randn(lm.n_kv if kind == "attn" else lm.n_channels, generator=g).exp()
            for lm in layers for kind in ("attn", "mlp")}


def _plan(qwen05, scores, name: str = "zscore", **params):
    layers, total = qwen05
    norm = plugins.NORMALIZERS.build(name, params, "normalizer.params")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NormalizerWarning)
        return plan_pruning(normalize_scores(scores, norm), layers, total, PruningSection(ratio=0.2), "qwen2")


def _kv_removed(plan) -> list[int]:
    """KV groups each layer loses (of 2)."""
    return [0 if lp.attn_kept is None else 2 - len(lp.attn_kept) for lp in plan.layers]


@pytest.mark.parametrize("name", plugins.NORMALIZERS.names())
def test_every_builtin_takes_a_scope_and_defaults_to_kind(name):
    assert plugins.NORMALIZERS.build(name).scope == "kind"
    assert plugins.NORMALIZERS.build(name, {"scope": "layer"}).scope == "layer"
    with pytest.raises(PluginError, match=r"normalizer\.params\.scope: Input should be 'layer' or 'kind'"):
        plugins.NORMALIZERS.build(name, {"scope": "model"}, "normalizer.params")


def test_kind_scope_normalizes_one_pool_per_kind():
    scores = {(0, "attn"): torch.tensor([1.0, 2.0]), (1, "attn"): torch.tensor([3.0, 10.0]),
              (0, "mlp"): torch.tensor([5.0, 1.0, 2.0]), (1, "mlp"): torch.tensor([4.0, 4.0, 0.0])}
    out = ZScoreNormalizer().normalize(scores)
    assert list(out) == list(scores)
    z = ZScoreNormalizer()
    attn, mlp = z(torch.tensor([1.0, 2.0, 3.0, 10.0])), z(torch.tensor([5.0, 1.0, 2.0, 4.0, 4.0, 0.0]))
    torch.testing.assert_close(torch.cat([out[(0, "attn")], out[(1, "attn")]]), attn)
    torch.testing.assert_close(torch.cat([out[(0, "mlp")], out[(1, "mlp")]]), mlp)


def test_per_layer_zscore_of_two_groups_removes_one_kv_group_per_layer_whatever_the_scores(qwen05):
    layers, _ = qwen05
    # the reviewer's finding: two different calibrations, the same 24 of 48 KV groups gone
    for seed in (0, 1):
        assert _kv_removed(_plan(qwen05, _scores(layers, seed), scope="layer")) == [1] * 24
    by_kind = [_kv_removed(_plan(qwen05, _scores(layers, seed))) for seed in (0, 1)]
    assert by_kind[0] != by_kind[1] and by_kind[0] != [1] * 24


def test_one_layer_with_10x_kv_scores_keeps_its_groups_under_the_default_scope(qwen05):
    layers, _ = qwen05
    scores = _scores(layers)
    before = _kv_removed(_plan(qwen05, scores))
    layer = before.index(1)  # the first layer that loses a KV group
    scaled = {**scores, (layer, "attn"): scores[(layer, "attn")] * 10}
    assert _kv_removed(_plan(qwen05, scaled))[layer] == 0
    # per layer, the ×10 is normalized away: the layer still loses a group (the plan does not change)
    per_layer = _plan(qwen05, scores, scope="layer")
    assert _plan(qwen05, scaled, scope="layer").to_dict() == per_layer.to_dict()
    assert _kv_removed(per_layer)[layer] == 1


@pytest.mark.parametrize("scope", ["kind", "layer"])
def test_attention_mlp_split_does_not_follow_raw_kv_magnitude_except_without_normalization(qwen05, scope):
    layers, _ = qwen05
    scores = _scores(layers)
    louder = {k: v * 1000 if k[1] == "attn" else v for k, v in scores.items()}
    # documented: a pool is normalized on its own, so scaling all KV scores changes nothing ...
    assert _plan(qwen05, louder, scope=scope).to_dict() == _plan(qwen05, scores, scope=scope).to_dict()
    # ... and only raw scores (``none``) let louder KV scores keep more attention
    raw, raw_louder = sum(_kv_removed(_plan(qwen05, scores, "none"))), sum(_kv_removed(_plan(qwen05, louder, "none")))
    assert raw > 0 and raw_louder < raw


def test_per_layer_pools_of_fewer_than_three_groups_are_warned_about(qwen05):
    layers, _ = qwen05
    scores = _scores(layers)
    with pytest.warns(NormalizerWarning, match=r"scope=layer: the attn scores of layers 0-23 hold only 2 group"):
        normalize_scores(scores, plugins.NORMALIZERS.build("zscore", {"scope": "layer"}))
    with warnings.catch_warnings():
        warnings.simplefilter("error", NormalizerWarning)
        normalize_scores(scores, plugins.NORMALIZERS.build("zscore"))  # one pool of 48: fine
        normalize_scores(scores, plugins.NORMALIZERS.build("none", {"scope": "layer"}))  # no pool statistics
