"""Gradient checkpointing gives the scores and statistics of the run without it; the model stays put."""

from __future__ import annotations

import pytest
import torch

from gradprune import plugins
from gradprune.calibration import calibrate
from gradprune.models.adapters import get_adapter
from gradprune.recipe import TrainerSection
from tests.conftest import make_model

CPU = TrainerSection(accelerator="cpu", devices=1, precision="32-true")
COLLECTORS = ["grad_norm", "grad_mean", "grad_std", "grad_max"]
ESTIMATORS = {
    "first_vector": ("taylor", {}),
    "first_element": ("taylor", {"granularity": "element"}),
    "fisher": ("taylor", {"order": "second"}),
    "mix": ("taylor", {"order": "mix", "granularity": "element"}),
    "activation": ("activation", {}),
}


def _run(arch: str, checkpointing: bool, hook_calls: list | None = None):
    model = make_model(arch)
    ids = torch.randint(0, 300, (6, 12), generator=torch.Generator().manual_seed(1))
    ests = {k: plugins.IMPORTANCE.build(n, p) for k, (n, p) in ESTIMATORS.items()}
    cols = [plugins.COLLECTORS.build(c) for c in COLLECTORS]
    layers = get_adapter(model).layers(model)
    if hook_calls is not None:  # calls of a layer's down_proj: doubled by the recomputation
        model.model.layers[0].mlp.down_proj.register_forward_pre_hook(lambda *_: hook_calls.append(1))
    res = calibrate(model, layers, ids, 2, ests, cols, CPU, gradient_checkpointing=checkpointing)
    return model, res


@pytest.mark.parametrize("arch", ["mistral", "qwen2"])
def test_checkpointing_gives_the_same_scores_and_statistics(arch):
    calls_ref, calls_ckpt = [], []
    _, ref = _run(arch, False, calls_ref)
    model, got = _run(arch, True, calls_ckpt)
    # it really recomputed: each layer's forward ran again in every backward pass
    assert len(calls_ckpt) == 2 * len(calls_ref)
    assert got.gradient_checkpointing is True and ref.gradient_checkpointing is False
    for name in ESTIMATORS:
        assert ref.scores[name].keys() == got.scores[name].keys()
        for key, s in ref.scores[name].items():
            torch.testing.assert_close(got.scores[name][key], s, rtol=1e-5, atol=1e-10,
                                       msg=lambda m, n=name, k=key: f"{n} {k}: {m}")
    for col in COLLECTORS:
        assert got.layer_stats[col] == pytest.approx(ref.layer_stats[col], rel=1e-5, abs=1e-12)
    assert got.mean_loss == pytest.approx(ref.mean_loss, rel=1e-6)
    # afterwards the model is an ordinary eval-mode model again
    flag = "is_activation_checkpointing" if hasattr(model, "is_activation_checkpointing") else "is_gradient_checkpointing"
    assert not getattr(model, flag) and not any(m.training for m in model.modules())


def test_model_stays_on_its_device_and_dtype_after_calibration():
    """Lightning's teardown would ``.cpu()`` the module and bf16-true would cast its buffers: neither
    touches the held model (checked through the rotary buffer, which transformers keeps in float32)."""
    model = make_model().to(torch.bfloat16)
    rotary = model.model.rotary_emb
    rotary.inv_freq = rotary.inv_freq.float()  # as from_pretrained(dtype=bfloat16) leaves it
    before = rotary.inv_freq.clone()
    cfg = TrainerSection(accelerator="cpu", devices=1, precision="bf16-true")
    ids = torch.randint(0, 300, (4, 8))
    calibrate(model, get_adapter(model).layers(model), ids, 2, {"t": plugins.IMPORTANCE.build("taylor")},
              [plugins.COLLECTORS.build("grad_norm")], cfg)
    assert rotary.inv_freq.dtype == torch.float32 and torch.equal(rotary.inv_freq, before)
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}


def test_statistics_state_lives_on_the_gradients_device():
    """The mean-gradient sums are allocated on the gradient's device and a collector's per-layer sums on the
    device calibration names, not where the model was at set-up (meta stands in for an accelerator: the only
    other device a CPU has)."""
    from gradprune.moments import MeanMoments

    moments = MeanMoments(grad=True, sq=True)
    g = torch.ones(4, 4, device="meta")
    moments.add((1, "q"), g, 2.0)
    assert {t.device.type for _, t, _ in moments.entries()} == {"meta"}
    col = plugins.COLLECTORS.build("grad_var")
    col.setup(get_adapter(make_model()).layers(make_model()), torch.device("meta"))
    col.begin_batch(2)
    col.end_batch()
    assert {t.device.type for t, _ in col.state().values()} == {"meta"}


def test_a_model_on_another_device_than_the_trainers_is_refused():
    from gradprune.calibration import _check_device
    from gradprune.errors import CalibrationError

    _check_device(torch.device("cuda", 0), torch.device("cuda", 0))
    _check_device(torch.device("cpu"), torch.device("cpu"))
    with pytest.raises(CalibrationError, match="the model is on cpu but"):
        _check_device(torch.device("cpu"), torch.device("cuda", 0))
