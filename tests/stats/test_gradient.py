"""Gradient statistic collectors against values computed from stored gradients."""

from __future__ import annotations

import math

import pytest
import torch

from gradprune import plugins
from gradprune.calibration import calibrate
from gradprune.models.adapters import get_adapter
from gradprune.recipe import TrainerSection
from gradprune.stats.summary import extreme_layers, ratio_summary
from tests.conftest import make_model

CPU = TrainerSection(accelerator="cpu", devices=1, precision="32-true")


ALL = ("grad_norm", "grad_mean", "grad_std", "grad_max", "grad_var", "grad_snr")


def _per_sample_grads(model, layers, ids):
    """Per-sample gradients of every layer's prunable weights (flattened, fp64), by a plain loop."""
    out = []
    for row in ids.split(1):
        model.zero_grad(set_to_none=True)
        model(input_ids=row, labels=row).loss.backward()
        out.append([torch.cat([p.grad.flatten() for p in lm.weights().values()]).double() for lm in layers])
    model.zero_grad(set_to_none=True)
    return out


def _stats(model, layers, ids, micro, per_sample=False):
    cols = [plugins.COLLECTORS.build(n) for n in ALL]
    est = plugins.IMPORTANCE.build("taylor", {"order": "second", "per_sample": per_sample})
    return calibrate(model, layers, ids, micro, {"t": est}, cols, CPU).layer_stats


def test_collectors_match_the_mean_gradient_reference():
    """The four statistics of G_l = mean over samples of the gradient; variance/SNR from per-sample grads."""
    model = make_model("mistral")
    ids = torch.randint(0, 300, (6, 10), generator=torch.Generator().manual_seed(3))
    layers = get_adapter(model).layers(model)
    per_sample = _per_sample_grads(model, layers, ids)
    exact = _stats(model, layers, ids, 2, per_sample=True)
    for li in range(len(layers)):
        gs = torch.stack([s[li] for s in per_sample])  # [N, count]
        G = gs.mean(0)
        tau = float(((gs - G) ** 2).sum(1).sum() / (len(gs) - 1))  # unbiased sample variance, trace
        assert exact["grad_norm"][li] == pytest.approx(float(G.norm()), rel=1e-5)
        assert exact["grad_mean"][li] == pytest.approx(float(G.mean()), rel=1e-4, abs=1e-12)
        assert exact["grad_std"][li] == pytest.approx(float(G.std(unbiased=False)), rel=1e-5)
        assert exact["grad_max"][li] == pytest.approx(float(G.abs().max()), rel=1e-5)
        assert exact["grad_var"][li] == pytest.approx(tau / G.numel(), rel=1e-4)
        assert exact["grad_snr"][li] == pytest.approx(float(G.norm() ** 2) / tau, rel=1e-4)


def test_statistics_do_not_depend_on_the_micro_batch_split_or_per_sample():
    """batch_size 1, 2, 3 (3 + 1), 4 on 4 samples, with and without per-sample gradients: the same
    grad_norm/mean/std/max (they are defined on the mean gradient); the variance is exact with micro-batches
    of one and an estimate otherwise."""
    model = make_model("qwen2")
    ids = torch.randint(0, 300, (4, 10), generator=torch.Generator().manual_seed(4))
    layers = get_adapter(model).layers(model)
    runs = [_stats(model, layers, ids, b) for b in (1, 2, 3, 4)] + [_stats(model, layers, ids, 4, per_sample=True)]
    for other in runs[1:]:
        for name in ("grad_norm", "grad_mean", "grad_std", "grad_max"):
            assert other[name] == pytest.approx(runs[0][name], rel=1e-4, abs=1e-10), name
    assert runs[4]["grad_var"] == pytest.approx(runs[0]["grad_var"], rel=1e-4)  # both exact
    assert all(math.isnan(v) for v in runs[3]["grad_var"])  # one micro-batch: no spread to estimate from


def test_ratio_summary_uses_abs_and_names_extremes():
    s = ratio_summary("grad_mean", [-4.0, 1.0, 2.0])
    assert s == {"grad_mean_ratio": 4.0, "grad_mean_max_layer": 0, "grad_mean_min_layer": 1}
    assert ratio_summary("grad_norm", [0.0, 1.0])["grad_norm_ratio"] is None
    assert ratio_summary("x", [float("nan"), 1.0])["x_ratio"] is None


def test_extreme_layers_threshold_is_strict():
    assert extreme_layers([0.1, 0.8, 0.81, 1.0], 0.8) == [2, 3]


def test_a_statistic_is_recorded_under_its_registry_name(register):
    """The key is the name a collector is registered under: an alias of a built-in and a streaming collector
    that declares no name of its own."""
    from gradprune.stats.gradient import GradNormCollector, StatCollector

    class GradCount(StatCollector):
        """Gradient elements seen per layer."""

        reads = frozenset({"gradients"})

        def observe_grad(self, layer, role, weight, grad):
            self.accumulator("n")[layer.index] += grad.numel()

        def per_layer(self):
            return self.accumulator("n").tolist()

    reg = plugins.COLLECTORS
    register(reg, "norm_alias", GradNormCollector)
    register(reg, "grad_count", GradCount)
    model = make_model("mistral")
    ids = torch.randint(0, 300, (2, 8), generator=torch.Generator().manual_seed(5))
    layers = get_adapter(model).layers(model)
    cols = [reg.build(n) for n in ("grad_norm", "norm_alias", "grad_count")]
    stats = calibrate(model, layers, ids, 2, {"t": plugins.IMPORTANCE.build("magnitude")}, cols, CPU).layer_stats
    assert set(stats) == {"grad_norm", "norm_alias", "grad_count"}
    assert stats["norm_alias"] == stats["grad_norm"]
    assert stats["grad_count"] == [float(sum(p.numel() for p in lm.weights().values())) for lm in layers]
