"""Global and local planning: ratio within half a group, parameter weighting, ranges, min_keep, round_to,
what the plan's meta reports, warnings, errors."""

from __future__ import annotations

import warnings

import pytest
import torch

from gradprune.errors import PlanError
from gradprune.models.adapters import get_adapter
from gradprune.pruning.planner import PlanWarning, plan_pruning, removed_params
from gradprune.recipe import PruningSection
from tests.conftest import make_model


@pytest.fixture(scope="module")
def tiny():
    m = make_model("mistral", num_hidden_layers=6)
    ad = get_adapter(m)
    return m, ad.layers(m), ad.count_params(m)


def _scores(layers, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {(lm.index, k): torch.rand(lm.n_kv if k == "attn" else lm.n_channels, generator=g)
            for lm in layers for k in ("attn", "mlp")}


@pytest.mark.parametrize("scope", ["global", "local"])
@pytest.mark.parametrize("ratio", [0.1, 0.2, 0.3, 0.5])
def test_achieved_ratio_is_within_one_group(tiny, scope, ratio):
    _, layers, total = tiny
    plan = plan_pruning(_scores(layers), layers, total, PruningSection(ratio=ratio, scope=scope), "mistral")
    removed = sum(v["removed"] for v in removed_params(plan, layers).values())
    biggest = max(lm.attn_group_params() for lm in layers)
    assert abs(removed - ratio * total) <= biggest / 2


def test_global_removes_lowest_scores_first(tiny):
    _, layers, total = tiny
    scores = _scores(layers)
    plan = plan_pruning(scores, layers, total, PruningSection(ratio=0.1, prune_attention=False), "mistral")
    removed = [float(scores[(lp.layer, "mlp")][i]) for lp in plan.layers if lp.mlp_kept is not None
               for i in set(range(layers[lp.layer].n_channels)) - set(lp.mlp_kept)]
    kept = [float(scores[(lp.layer, "mlp")][i]) for lp in plan.layers
            for i in (lp.mlp_kept if lp.mlp_kept is not None else range(layers[lp.layer].n_channels))]
    assert max(removed) <= min(kept)


def test_local_prunes_every_layer_equally(tiny):
    _, layers, total = tiny
    plan = plan_pruning(_scores(layers), layers, total, PruningSection(ratio=0.2, scope="local",
                                                                       prune_attention=False), "mistral")
    kept = {len(lp.mlp_kept) for lp in plan.layers}
    assert len(kept) == 1


def test_layer_ranges_and_min_keep(tiny):
    _, layers, total = tiny
    sec = PruningSection(ratio=0.3, attention_layers=(2, 4), mlp_layers=(1, 5), min_keep=1)
    scores = {k: torch.zeros_like(v) for k, v in _scores(layers).items()}  # all equal: would drain layers
    scores.update({(lm.index, "attn"): torch.full((lm.n_kv,), -5.0) for lm in layers})
    plan = plan_pruning(scores, layers, total, sec, "mistral")
    for lp in plan.layers:
        if lp.layer not in (2, 3):
            assert lp.attn_kept is None
        else:
            assert len(lp.attn_kept) >= 1
        if lp.layer in (0, 5):
            assert lp.mlp_kept is None


def test_layer_range_ends_relative_to_the_model():
    from gradprune.pruning.planner import allowed_layers

    assert allowed_layers(32, (3, -1), "mlp_layers") == range(3, 31)  # LLM-Pruner's default on 32 layers
    assert allowed_layers(3, (1, None), "mlp_layers") == range(1, 3)
    assert allowed_layers(4, (1, None), "mlp_layers") == range(1, 4)
    with pytest.raises(PlanError, match=r"pruning.mlp_layers: \[2, -1\) is outside the model, which has 3"):
        allowed_layers(3, (2, -1), "mlp_layers")  # empty on a 3-layer model
    with pytest.raises(PlanError, match=r"\[4, null\) is outside the model, which has 4 layers"):
        allowed_layers(4, (4, None), "attention_layers")


def test_round_to_keeps_multiples(tiny):
    _, layers, total = tiny
    plan = plan_pruning(_scores(layers), layers, total, PruningSection(ratio=0.2, round_to=8,
                                                                       prune_attention=False), "mistral")
    assert all(len(lp.mlp_kept) % 8 == 0 for lp in plan.layers if lp.mlp_kept is not None)


def test_impossible_ratio_and_bad_range(tiny):
    _, layers, total = tiny
    with pytest.raises(PlanError, match="only .* are removable"):
        plan_pruning(_scores(layers), layers, total, PruningSection(ratio=0.9, mlp_layers=(0, 1),
                                                                    attention_layers=(0, 1)), "mistral")
    with pytest.raises(PlanError, match=r"pruning.mlp_layers: \[2, 9\) is outside the model, which has 6 layers"):
        plan_pruning(_scores(layers), layers, total, PruningSection(ratio=0.1, mlp_layers=(2, 9)), "mistral")


def test_plan_is_deterministic_and_json(tiny):
    _, layers, total = tiny
    a = plan_pruning(_scores(layers), layers, total, PruningSection(ratio=0.25), "mistral")
    b = plan_pruning(_scores(layers), layers, total, PruningSection(ratio=0.25), "mistral")
    assert a.to_dict() == b.to_dict()


def test_plan_meta_is_plain_json(tiny):
    import json

    _, layers, total = tiny
    plan = plan_pruning(_scores(layers), layers, total, PruningSection(ratio=0.25, scope="local"), "mistral")
    meta = json.loads(json.dumps(plan.to_dict(), allow_nan=False))["meta"]
    assert meta["emptied_layers"] == {"attn": [], "mlp": []} and meta["warnings"] == []
    assert meta["removed_params"] == sum(v["removed"] for v in removed_params(plan, layers).values())
    assert meta["achieved_ratio"] == meta["removed_params"] / total


# --------------------------------------------------------------------------------------------------
# the target on real shapes: the embedded model, config-built tiny Mistral / Qwen2, a Mistral-7B shape


def _meta_mistral_7b():
    """Mistral-7B's shape (32 layers x 8 KV groups + 14,336 channels) on the meta device: no weights."""
    import transformers as tf

    with torch.device("meta"):
        return tf.AutoModelForCausalLM.from_config(tf.MistralConfig())


def _embedded():
    """The tiny model shipped in gradprune/assets (Mistral, 4 layers x 2 KV groups + 512 channels)."""
    from gradprune.models.loading import load_model
    from gradprune.recipe import ModelSection

    return load_model(ModelSection(name_or_path="embedded"))[0]


MODELS = {
    "embedded": _embedded,
    "tiny-mistral": lambda: make_model("mistral"),
    "tiny-qwen2": lambda: make_model("qwen2"),
    "mistral-7b-shape": _meta_mistral_7b,
}


@pytest.fixture(scope="module")
def shapes():
    """name -> (layers, total params), each built once."""
    cache: dict = {}

    def get(name):
        if name not in cache:
            model = MODELS[name]()
            adapter = get_adapter(model)
            cache[name] = adapter.layers(model), adapter.count_params(model)
        return cache[name]

    return get


def _plan_quietly(layers, total, **kw):
    """Plan with every PlanWarning turned into an error (the cases below must not need one)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", PlanWarning)
        return plan_pruning(_scores(layers), layers, total, PruningSection(**kw), "mistral")


def _removed(plan, layers) -> int:
    return sum(v["removed"] for v in removed_params(plan, layers).values())


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("scope", ["local", "global"])
@pytest.mark.parametrize("ratio", [0.2, 0.3, 0.4])
@pytest.mark.parametrize("round_to", [1, 8])
def test_both_scopes_hit_the_target_within_half_a_group(shapes, name, scope, ratio, round_to):
    # reference: ratio x all params, within global's own guarantee (half the largest group); local
    # used to round each layer on its own and could miss by up to a group per layer
    layers, total = shapes(name)
    plan = _plan_quietly(layers, total, ratio=ratio, scope=scope, round_to=round_to)
    group = max(lm.attn_group_params() for lm in layers)
    assert plan.meta["tolerance_params"] == group  # one KV group: local's MLP steps are finer here
    assert abs(_removed(plan, layers) - ratio * total) <= group / 2
    assert abs(plan.meta["achieved_ratio"] - ratio) <= group / 2 / total
    assert all(len(lp.mlp_kept) % round_to == 0 for lp in plan.layers if lp.mlp_kept is not None)


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("ratio", [0.2, 0.3, 0.4])
def test_local_cuts_every_layer_alike_and_rounds_the_kv_share_to_the_nearest_group(shapes, name, ratio):
    layers, total = shapes(name)
    plan = _plan_quietly(layers, total, ratio=ratio, scope="local")
    kept = {(len(lp.attn_kept) if lp.attn_kept is not None else lm.n_kv,
             len(lp.mlp_kept) if lp.mlp_kept is not None else lm.n_channels)
            for lp, lm in zip(plan.layers, layers, strict=True)}
    assert len(kept) == 1  # what lets a local plan save as a plain Hugging Face checkpoint
    (n_kv, _), lm = kept.pop(), layers[0]
    free_kv, free_ch = lm.n_kv - 1, lm.n_channels - 1  # min_keep=1
    per_layer = free_kv * lm.attn_group_params() + free_ch * lm.mlp_group_params()
    share = ratio * total / (len(layers) * per_layer)
    assert lm.n_kv - n_kv == round(share * free_kv)  # the MLP count made up the rest


def test_local_without_mlp_names_the_ratios_it_can_reach(shapes):
    layers, total = shapes("embedded")  # 4 layers x 2 KV groups: 0, 1 or 2 from every layer
    step = len(layers) * layers[0].attn_group_params()  # 10.55 % of the model
    with pytest.warns(PlanWarning, match=r"scope=local cuts the same number .* nearest ratios it can reach "
                                         rf"here are {step / total:.4f} and {2 * step / total:.4f}") as caught:
        plan = plan_pruning(_scores(layers), layers, total,
                            PruningSection(ratio=0.15, scope="local", prune_mlp=False, min_keep=0), "mistral")
    assert plan.meta["warnings"] == [str(caught[0].message)]
    assert plan.meta["removed_params"] == step  # the nearer of the two


def test_a_round_to_beyond_the_widths_removes_what_it_can_and_names_the_reachable_ratio(shapes):
    from gradprune.pruning.reach import model_shape, reach

    layers, total = shapes("embedded")
    pruning = PruningSection(ratio=0.2, round_to=100_000)  # no width can become a multiple: MLP stays whole
    with pytest.warns(PlanWarning, match=r"round_to=100000 at most .* are removable") as caught:
        plan = plan_pruning(_scores(layers), layers, total, pruning, "mistral")
    config = _embedded().config
    cap = reach(model_shape(config), pruning).max_ratio  # what preflight refuses above, before calibration
    assert f"use pruning.ratio <= {int(cap * 10_000) / 10_000:g}" in str(caught[0].message)
    assert plan.meta["warnings"] == [str(caught[0].message)]
    assert all(lp.mlp_kept is None and len(lp.attn_kept) == 1 for lp in plan.layers)
    assert plan.meta["achieved_ratio"] == pytest.approx(cap)


def test_round_to_steps_larger_than_a_group_are_warned_about(shapes):
    layers, total = shapes("embedded")  # 512 channels: round_to=256 can only remove 256 at once
    with pytest.warns(PlanWarning, match=r"round_to=256 removes MLP channels in steps of up to 147,456"):
        plan = plan_pruning(_scores(layers), layers, total,
                            PruningSection(ratio=0.1, round_to=256, prune_attention=False), "mistral")
    assert {len(lp.mlp_kept) for lp in plan.layers if lp.mlp_kept is not None} == {256}


def test_layers_left_without_a_block_are_reported(tiny):
    _, layers, total = tiny
    scores = _scores(layers)
    scores[(0, "attn")] = torch.full((layers[0].n_kv,), -100.0)  # layer 0's KV groups go first
    with pytest.warns(PlanWarning, match=r"min_keep=0: layer 0 loses every KV group"):
        plan = plan_pruning(scores, layers, total, PruningSection(ratio=0.06, min_keep=0), "mistral")
    assert plan.layers[0].attn_kept == []
    assert plan.meta["emptied_layers"] == {"attn": [0], "mlp": []}
