"""The calibration loop waits for the device once per ``check_every`` micro-batches (and once at the end), not
per micro-batch: counted by patching every ``torch.Tensor`` method that hands a value to the host.

transformers' causal-mask builder reads one boolean per forward (its check for packed sequences, or with an
attention mask its all-ones check): that read is the model's, made whatever calibration does, and is left
out of the count."""

from __future__ import annotations

import sys

import pytest
import torch

from gradprune import plugins
from gradprune.calibration import calibrate
from gradprune.errors import CalibrationError
from gradprune.models.adapters import get_adapter
from gradprune.recipe import TrainerSection
from tests.conftest import make_model

CPU = TrainerSection(accelerator="cpu", devices=1, precision="32-true")
#: the Tensor methods that copy a value to the host (on a GPU each waits for the queued work)
HOST_READS = ("item", "__bool__", "__float__", "__int__", "__index__", "cpu", "tolist", "numpy")


def _syncs(monkeypatch, n_batches: int, check_every: int) -> int:
    """Host reads of tensors during one calibration of ``n_batches`` one-sample micro-batches."""
    count = [0]
    for name in HOST_READS:
        original = getattr(torch.Tensor, name)

        def counted(self, *args, _original=original, **kwargs):
            if not sys._getframe(1).f_globals.get("__name__", "").startswith("transformers."):
                count[0] += 1
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, counted)
    model = make_model()
    ids = torch.randint(0, 300, (n_batches, 8), generator=torch.Generator().manual_seed(0))
    ests = {"t": plugins.IMPORTANCE.build("taylor"), "a": plugins.IMPORTANCE.build("activation")}
    cols = [plugins.COLLECTORS.build(c) for c in ("grad_norm", "grad_mean", "grad_var")]
    try:
        res = calibrate(model, get_adapter(model).layers(model), ids, 1, ests, cols, CPU, check_every=check_every)
    finally:
        monkeypatch.undo()
    assert res.batches == n_batches and res.mean_loss is not None
    return count[0]


def test_host_reads_do_not_grow_with_the_micro_batches(monkeypatch):
    few, many = _syncs(monkeypatch, 3, 16), _syncs(monkeypatch, 35, 16)
    # 3 micro-batches: one check at the end; 35: after the 16th and the 32nd and at the end. A check is one
    # transfer of every pending loss and gradient norm (``.cpu()``) read as a list (``.tolist()``)
    assert many - few == 2 * 2, (few, many)


def test_checking_every_micro_batch_reads_once_per_micro_batch(monkeypatch):
    assert _syncs(monkeypatch, 9, 1) - _syncs(monkeypatch, 3, 1) == 6 * 2


def _poisoned_at(call: int):
    """A hook that turns its tensor into NaN on its ``call``-th call (1-based), else leaves it."""
    calls = [0]

    def poison(*args):
        calls[0] += 1
        t = args[-1]
        return t * float("nan") if calls[0] == call else t

    return poison


def test_a_non_finite_gradient_is_named_by_layer_and_micro_batch():
    """Found at the check after it (micro-batch 16), named by the micro-batch it happened in."""
    model = make_model()
    layers = get_adapter(model).layers(model)
    layers[2].up.weight.register_hook(_poisoned_at(14))  # runs before calibration's post-accumulate hook
    ids = torch.randint(0, 300, (20, 8), generator=torch.Generator().manual_seed(1))
    with pytest.raises(CalibrationError, match=r"gradient first seen in layer 2, micro-batch 14;"):
        calibrate(model, layers, ids, 1, {"t": plugins.IMPORTANCE.build("taylor")}, [], CPU, check_every=16)


def test_a_non_finite_loss_is_named_by_micro_batch():
    model = make_model()
    layers = get_adapter(model).layers(model)
    model.lm_head.register_forward_hook(_poisoned_at(5))
    ids = torch.randint(0, 300, (6, 8), generator=torch.Generator().manual_seed(1))
    with pytest.raises(CalibrationError, match=r"calibration loss is nan \(non-finite\) in micro-batch 5:"):
        calibrate(model, layers, ids, 1, {"t": plugins.IMPORTANCE.build("taylor")}, [], CPU, check_every=4)
