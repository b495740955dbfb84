"""The memory plan: what autograd keeps matches the formula, calibration.batch_size auto, the refusal with the
numbers and the knobs, the stages' spread under FSDP; capacities are mocked (no GPU needed)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from gradprune.memory.capacity import Capacity
from gradprune.memory.fit import fit, largest_batch
from gradprune.memory.plan import layer_activation_bytes, plan_memory
from gradprune.memory.shape import model_shape
from gradprune.memory.table import load_config
from gradprune.memory.workload import workload
from gradprune.recipe import load_recipe
from tests.conftest import make_model

ROOT = Path(__file__).resolve().parents[2]
GiB = 2**30


def saved_bytes(model, ids) -> int:
    """Bytes of the tensors autograd keeps for the backward of one forward with labels (as calibration
    runs it: only the prunable weights need a gradient), parameters and buffers left out."""
    from gradprune.models.adapters import get_adapter

    for p in model.parameters():
        p.requires_grad_(False)
    for lm in get_adapter(model).layers(model):
        for p in lm.weights().values():
            p.requires_grad_(True)
    owned = {t.untyped_storage().data_ptr() for t in [*model.parameters(), *model.buffers()]}
    saved: dict[int, int] = {}

    def pack(t):
        st = t.untyped_storage()
        if st.data_ptr() not in owned:
            saved[st.data_ptr()] = st.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = model(input_ids=ids, labels=ids, use_cache=False).loss
    del loss
    return sum(saved.values())


@pytest.mark.parametrize("arch,kw", [("mistral", {}), ("llama", {"num_key_value_heads": 8}),
                                     ("qwen2", {"intermediate_size": 200})])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_what_autograd_keeps_is_the_formula(arch, kw, dtype):
    model = make_model(arch, vocab_size=500, **kw).to(dtype)
    shape = model_shape(model.config)
    d = torch.finfo(dtype).bits // 8
    b, seq = 3, 24
    measured = saved_bytes(model, torch.randint(0, 500, (b, seq)))
    # per token: every layer's activations and the fp32 log-probabilities (the plan's "activations" line)
    formula = b * seq * (shape.n_layers * layer_activation_bytes(shape, d) + 4 * shape.vocab)
    assert abs(formula / measured - 1) < 0.03, (formula, measured)


def _recipe(*overrides):
    return load_recipe(ROOT / "recipes/mistral_20.yaml", list(overrides))


def _mistral():
    return model_shape(load_config(ROOT / "docs/model_configs/mistral-7b-v0.3.json"))


def _gpu(gib: float, gpus: int = 1) -> Capacity:
    return Capacity("cuda", f"{gpus} × test GPU", int(gib * GiB), int(gib * GiB), gpus)


def test_plan_lines_add_up_and_grow_with_the_micro_batch():
    shape = _mistral()
    w = workload(_recipe("calibration.seq_len=256"), shape.vocab)
    small, big = plan_memory(shape, w.with_batch(1), False), plan_memory(shape, w.with_batch(8), False)
    assert small.item("calibration", "weights") == shape.params * 2  # bf16
    assert small.item("calibration", "mean-gradient") == 4 * shape.prunable  # its own line: 4 B per parameter
    assert big.stage_peak("calibration") > small.stage_peak("calibration")
    assert big.stage_peak("load") == small.stage_peak("load") == shape.params * 2
    # checkpointing keeps one input per layer instead of every activation
    ckpt = plan_memory(shape, workload(_recipe("calibration.seq_len=256", "calibration.gradient_checkpointing=true"),
                                       shape.vocab).with_batch(8), False)
    assert ckpt.item("calibration", "activations") < big.item("calibration", "activations") / 10


def test_batch_size_auto_is_the_largest_micro_batch_that_fits():
    shape = _mistral()
    w = workload(_recipe("calibration.seq_len=256", "calibration.batch_size=auto"), shape.vocab)
    assert w.batch_size_auto and w.micro_batch == 1
    gpu = _gpu(60)
    fitted = fit(shape, w, gpu)
    b = fitted.plan.workload.micro_batch
    assert fitted.problem is None and fitted.plan.workload.mean_gradient == "device" and 1 < b < w.num_samples
    assert plan_memory(shape, w.with_batch(b), False).peak <= gpu.usable
    assert plan_memory(shape, w.with_batch(b + 1), False).peak > gpu.usable
    assert any("batch_size auto" in n for n in fitted.notes)
    # a per-sample estimator stays at one sample a time
    per_sample = workload(_recipe("calibration.batch_size=auto", "importance.params.per_sample=true"), shape.vocab)
    assert not per_sample.batch_size_auto and per_sample.micro_batch == 1


def test_a_recipe_that_fits_nowhere_is_refused_with_numbers_and_knobs():
    shape = _mistral()
    w = workload(_recipe("calibration.seq_len=2048", "calibration.num_samples=128"), shape.vocab)
    fitted = fit(shape, w, _gpu(79))
    text = fitted.problem
    assert text.startswith("calibration needs ") and "at calibration.batch_size 8 (activations " in text
    best = largest_batch(shape, w, _gpu(79), False)
    assert 0 < best < 8 and f"calibration.batch_size ≤ {best} (or auto)" in text
    assert "calibration.gradient_checkpointing: true (≈ " in text and "the GPU has 79.0 GiB free" in text


def test_the_mean_gradient_buffer_moves_to_the_host_only_when_the_exact_mode_does_not_fit():
    shape = _mistral()
    w = workload(_recipe("calibration.seq_len=16"), shape.vocab)
    exact = plan_memory(shape, w, False)
    roomy = fit(shape, w, _gpu(exact.peak / GiB / 0.9 + 1))
    assert roomy.problem is None and roomy.plan.workload.mean_gradient == "device"
    tight = fit(shape, w, _gpu((exact.peak - shape.prunable * 4) / GiB / 0.9 + 1))
    assert tight.problem is None and tight.plan.workload.mean_gradient == "host"
    assert any("host memory" in n for n in tight.notes)
    # on the host itself there is nowhere else to put it
    cpu = Capacity("cpu", "host", int(exact.peak / 0.9) - 1, 2**40)
    assert fit(shape, w, cpu).problem is not None


def test_fsdp_spreads_a_gathered_model_that_no_gpu_holds_and_refuses_where_none_do():
    shape = model_shape(load_config(ROOT / "docs/model_configs/llama-2-70b.json"))
    r = _recipe("calibration.seq_len=16", "calibration.gradient_checkpointing=true")
    w = workload(r, shape.vocab, world=8)
    spread = fit(shape, w, _gpu(79, gpus=8))
    assert spread.problem is None and spread.spread_eval  # 129 GiB of weights over 8 GPUs
    assert fit(shape, workload(r, shape.vocab, world=2), _gpu(79, gpus=2)).problem is not None


@pytest.mark.slow
def test_estimate_matches_the_measured_calibration_peak_on_cpu(tmp_path):
    import json
    import os
    import subprocess
    import sys

    out = tmp_path / "rows.json"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks/memory_plan.py"), "--sizes", "tiny",
                           "--seq-lens", "32", "128", "--json", str(out)], capture_output=True, text=True,
                          timeout=900, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = json.loads(out.read_text())
    assert len(rows) == 4  # two window lengths, with and without checkpointing
    for r in rows:  # the stage's peak (weights and all) within ±15 %, as the plan promises
        assert abs(r["error"]) < 0.15, r
