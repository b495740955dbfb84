"""Calibration hooks: gone after the run and after an exception; NaN gradients fail with the layer."""

from __future__ import annotations

import pytest
import torch

from gradprune import plugins
from gradprune.calibration import calibrate
from gradprune.errors import CalibrationError
from gradprune.importance.base import ImportanceEstimator
from gradprune.models.adapters import get_adapter
from gradprune.recipe import TrainerSection
from tests.conftest import make_model

CPU = TrainerSection(accelerator="cpu", devices=1, precision="32-true")


def _hook_count(model) -> int:
    n = 0
    for m in model.modules():
        n += len(m._forward_pre_hooks) + len(m._forward_hooks)
        for p in m.parameters(recurse=False):
            n += len(getattr(p, "_post_accumulate_grad_hooks", None) or {})
    return n


class Boom(ImportanceEstimator):
    """Raises on the third gradient it sees."""

    reads = frozenset({"gradients"})
    input_roles = ("o", "down")

    def __init__(self, params=None):
        super().__init__(params)
        self.n = 0

    def observe_grad(self, layer, role, weight, grad):
        self.n += 1
        if self.n == 3:
            raise RuntimeError("boom")


def test_no_hook_survives_an_exception():
    model = make_model()
    before = _hook_count(model)
    flags = [p.requires_grad for p in model.parameters()]
    ids = torch.randint(0, 300, (4, 8))
    with pytest.raises(RuntimeError, match="boom"):
        calibrate(model, get_adapter(model).layers(model), ids, 2, {"b": Boom()}, [], CPU)
    assert _hook_count(model) == before
    assert [p.requires_grad for p in model.parameters()] == flags


def test_no_hook_survives_a_normal_run():
    model = make_model()
    before = _hook_count(model)
    ests = {"t": plugins.IMPORTANCE.build("taylor"), "a": plugins.IMPORTANCE.build("activation")}
    calibrate(model, get_adapter(model).layers(model), torch.randint(0, 300, (4, 8)), 2, ests,
              [plugins.COLLECTORS.build("grad_norm")], CPU)
    assert _hook_count(model) == before


def test_nan_gradient_is_reported_with_its_layer():
    model = make_model()
    layers = get_adapter(model).layers(model)
    with torch.no_grad():
        layers[2].up.weight[0, 0] = float("inf")
    with pytest.raises(CalibrationError, match=r"non-finite|layer"):
        calibrate(model, layers, torch.randint(0, 300, (4, 8)), 2, {"t": plugins.IMPORTANCE.build("taylor")},
                  [], CPU)


def test_activation_only_needs_no_backward():
    model = make_model()
    res = calibrate(model, get_adapter(model).layers(model), torch.randint(0, 300, (4, 8)), 2,
                    {"a": plugins.IMPORTANCE.build("activation")}, [], CPU)
    assert res.backward is False and res.batches == 2
    assert all(p.grad is None for p in model.parameters())
    assert set(res.scores["a"]) == {(i, k) for i in range(4) for k in ("attn", "mlp")}
