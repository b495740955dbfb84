"""FLAP against a plain-PyTorch re-implementation of its formula, and its streaming variance."""

from __future__ import annotations

import pytest
import torch

from gradprune import plugins
from gradprune.calibration import calibrate
from gradprune.models.adapters import get_adapter
from gradprune.recipe import TrainerSection
from tests.conftest import make_model

CPU = TrainerSection(accelerator="cpu", devices=1, precision="32-true")
SAMPLES, SEQ_LEN = 7, 24


def _ids() -> torch.Tensor:
    return torch.randint(0, 300, (SAMPLES, SEQ_LEN), generator=torch.Generator().manual_seed(3))


def reference_flap(model, ids: torch.Tensor, standardize: bool) -> dict[tuple[int, str], torch.Tensor]:
    """FLAP's WIFV by hand: hooks on the raw model's o_proj / down_proj, torch.var over every token, squared
    column norms; a KV group's channels are its query heads' o_proj columns. ``standardize``: FLAP's
    ``(x - mean) / std`` over a layer's channels, then each group's mean (its AL-AM structure)."""
    inputs: dict[tuple[int, str], list[torch.Tensor]] = {}
    handles = []
    for i, block in enumerate(model.model.layers):
        for kind, lin in (("attn", block.self_attn.o_proj), ("mlp", block.mlp.down_proj)):
            def keep(_module, args, key=(i, kind)):
                inputs.setdefault(key, []).append(args[0].detach().reshape(-1, args[0].shape[-1]))
            handles.append(lin.register_forward_pre_hook(keep))
    try:
        with torch.no_grad():
            model(input_ids=ids)
    finally:
        for h in handles:
            h.remove()
    n_kv = model.config.num_key_value_heads
    out = {}
    for (i, kind), xs in inputs.items():
        x = torch.cat(xs).double()
        block = model.model.layers[i]
        w = (block.self_attn.o_proj if kind == "attn" else block.mlp.down_proj).weight.detach().double()
        metric = torch.var(x, dim=0) * w.pow(2).sum(dim=0)
        if standardize:
            metric = (metric - metric.mean()) / metric.std()
        groups = metric.view(n_kv, -1) if kind == "attn" else metric.view(-1, 1)
        out[(i, kind)] = groups.mean(1) if standardize else groups.sum(1)
    return out


@pytest.mark.parametrize("arch", ["mistral", "qwen2"])
@pytest.mark.parametrize("standardize", [False, True])
def test_calibrated_flap_equals_the_formula_on_the_raw_model(arch, standardize):
    model = make_model(arch, seed=1)
    layers = get_adapter(model).layers(model)
    est = plugins.IMPORTANCE.build("flap", {"standardize": standardize})
    got = calibrate(model, layers, _ids(), 3, {"flap": est}, [], CPU).scores["flap"]  # micro-batches 3, 3, 1
    want = reference_flap(model, _ids(), standardize)
    assert set(got) == set(want) and len(want) == 8
    for key, ref in want.items():
        assert got[key].shape == ref.shape and got[key].dtype == torch.float32
        scale = ref.abs().max().item()
        torch.testing.assert_close(got[key].double(), ref, rtol=1e-6, atol=1e-6 * scale, msg=str(key))


def _fed(layers, xs: list[torch.Tensor], standardize: bool = False):
    est = plugins.IMPORTANCE.build("flap", {"standardize": standardize})
    est.setup(layers)
    for x in xs:
        for lm in layers:
            est.observe_input(lm, "o", x[..., : lm.o.in_features])
            est.observe_input(lm, "down", x[..., : lm.down.in_features] * 3 + 100)  # a large mean: cancellation
    return est


def test_the_variance_does_not_depend_on_the_split_and_sums_across_processes():
    model = make_model("mistral", seed=2)
    layers = get_adapter(model).layers(model)
    x = torch.randn(12, 10, 128, generator=torch.Generator().manual_seed(0))
    whole = _fed(layers, [x]).scores()
    for split in ([x[:1], x[1:5], x[5:]], list(x.split(1))):
        for key, v in _fed(layers, split).scores().items():
            torch.testing.assert_close(v, whole[key], rtol=1e-7, atol=0)
    # DDP: each rank sees part of the batches; the states are summed in place, then rank 0 scores
    rank0, rank1 = _fed(layers, [x[:7]]), _fed(layers, [x[7:]])
    for name, (t, op) in rank0.state().items():
        assert op == "sum"
        t += rank1.state()[name][0]
    for key, v in rank0.scores().items():
        torch.testing.assert_close(v, whole[key], rtol=1e-7, atol=0)
    # the variance itself, against torch.var over every token, despite the mean of 100
    flat = (x[..., : layers[0].down.in_features] * 3 + 100).reshape(-1, layers[0].down.in_features).double()
    w = layers[0].down.weight.detach().double()
    torch.testing.assert_close(rank0.channel_scores(layers[0], "down"), flat.var(0) * w.square().sum(0),
                               rtol=1e-10, atol=0)


def test_standardized_scores_rank_groups_as_the_raw_sums_within_a_layer():
    model = make_model("mistral", seed=4)
    layers = get_adapter(model).layers(model)
    x = torch.randn(4, 16, 128, generator=torch.Generator().manual_seed(1))
    raw, std = _fed(layers, [x]).scores(), _fed(layers, [x], standardize=True).scores()
    for key in raw:  # same group size within a layer and kind: the mean of z-scores is an increasing map
        assert torch.equal(raw[key].argsort(), std[key].argsort())
    mlp = torch.cat([std[(lm.index, "mlp")] for lm in layers])
    assert abs(float(mlp.mean())) < 1e-5  # an MLP group is one channel: each layer's scores have mean 0
