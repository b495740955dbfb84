"""Global and local planning: exact ratio, parameter weighting, ranges, min_keep, round_to, errors."""

from __future__ import annotations

import pytest
import torch

from gradprune.errors import PlanError
from gradprune.models.adapters import get_adapter
from gradprune.pruning.planner import plan_pruning, removed_params
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
    slack = biggest / 2 if scope == "global" else biggest * len(layers)
    assert abs(removed - ratio * total) <= slack


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
