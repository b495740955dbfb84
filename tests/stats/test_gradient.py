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


def test_collectors_match_reference():
    model = make_model("mistral")
    ids = torch.randint(0, 300, (6, 10), generator=torch.Generator().manual_seed(3))
    layers = get_adapter(model).layers(model)
    per_batch = []
    for chunk in ids.split(2):
        model.zero_grad(set_to_none=True)
        model(input_ids=chunk, labels=chunk).loss.backward()
        per_batch.append([torch.cat([p.grad.flatten() for p in lm.weights().values()]).double() for lm in layers])
    model.zero_grad(set_to_none=True)
    cols = [plugins.COLLECTORS.build(n) for n in ("grad_norm", "grad_mean", "grad_std", "grad_max")]
    res = calibrate(model, layers, ids, 2, {"t": plugins.IMPORTANCE.build("taylor")}, cols, CPU)
    for li in range(len(layers)):
        allg = torch.cat([b[li] for b in per_batch])
        norm = math.sqrt(sum(float(b[li].norm() ** 2) for b in per_batch) / len(per_batch))
        assert res.layer_stats["grad_norm"][li] == pytest.approx(norm, rel=1e-5)
        assert res.layer_stats["grad_mean"][li] == pytest.approx(float(allg.mean()), rel=1e-4, abs=1e-12)
        assert res.layer_stats["grad_std"][li] == pytest.approx(float(allg.std(unbiased=False)), rel=1e-5)
        assert res.layer_stats["grad_max"][li] == pytest.approx(float(allg.abs().max()), rel=1e-6)


def test_ratio_summary_uses_abs_and_names_extremes():
    s = ratio_summary("grad_mean", [-4.0, 1.0, 2.0])
    assert s == {"grad_mean_ratio": 4.0, "grad_mean_max_layer": 0, "grad_mean_min_layer": 1}
    assert ratio_summary("grad_norm", [0.0, 1.0])["grad_norm_ratio"] is None
    assert ratio_summary("x", [float("nan"), 1.0])["x_ratio"] is None


def test_extreme_layers_threshold_is_strict():
    assert extreme_layers([0.1, 0.8, 0.81, 1.0], 0.8) == [2, 3]
