"""The memory plan: what autograd keeps matches the formula, calibration.batch_size auto, the refusal with the
numbers and the knobs, the stages' spread under FSDP; capacities are mocked (no GPU needed)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from gradprune.memory.autograd import layer_activation_bytes
from gradprune.memory.capacity import Capacity
from gradprune.memory.fit import fit, largest_batch
from gradprune.memory.plan import hook_bytes, plan_memory
from gradprune.memory.shape import model_shape
from gradprune.memory.table import load_config
from gradprune.memory.workload import workload
from gradprune.recipe import load_recipe
from tests.conftest import make_model

ROOT = Path(__file__).resolve().parents[2]
GiB = 2**30


def saved_bytes(model, ids, attention_mask=None) -> int:
    """Bytes of the tensors autograd keeps for the backward of one forward with labels, parameters and
    buffers left out (whichever parameters need a gradient: the caller sets them)."""
    owned = {t.untyped_storage().data_ptr() for t in [*model.parameters(), *model.buffers()]}
    saved: dict[int, int] = {}

    def pack(t):
        st = t.untyped_storage()
        if st.data_ptr() not in owned:
            saved[st.data_ptr()] = st.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = model(input_ids=ids, attention_mask=attention_mask, labels=ids, use_cache=False).loss
    del loss
    return sum(saved.values())


def calibration_saved_bytes(model, ids) -> int:
    """:func:`saved_bytes` as calibration runs: only the prunable weights need a gradient."""
    from gradprune.models.adapters import get_adapter

    for p in model.parameters():
        p.requires_grad_(False)
    for lm in get_adapter(model).layers(model):
        for p in lm.weights().values():
            p.requires_grad_(True)
    return saved_bytes(model, ids)


@pytest.mark.parametrize("arch,kw", [("mistral", {}), ("llama", {"num_key_value_heads": 8}),
                                     ("qwen2", {"intermediate_size": 200})])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_what_autograd_keeps_is_the_formula(arch, kw, dtype):
    model = make_model(arch, vocab_size=500, **kw).to(dtype)
    shape = model_shape(model.config)
    d = torch.finfo(dtype).bits // 8
    b, seq = 3, 24
    measured = calibration_saved_bytes(model, torch.randint(0, 500, (b, seq)))
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
    w = workload(_recipe("calibration.seq_len=256"))
    small, big = plan_memory(shape, w.with_batch(1), False), plan_memory(shape, w.with_batch(8), False)
    assert small.item("calibration", "weights") == shape.params * 2  # bf16
    assert small.item("calibration", "mean-gradient") == 4 * shape.prunable  # its own line: 4 B per parameter
    assert big.stage_peak("calibration") > small.stage_peak("calibration")
    assert big.stage_peak("load") == small.stage_peak("load") == shape.params * 2
    # checkpointing keeps one input per layer instead of every activation
    ckpt = plan_memory(shape, workload(_recipe("calibration.seq_len=256", "calibration.gradient_checkpointing=true"))
                       .with_batch(8), False)
    assert ckpt.item("calibration", "activations") < big.item("calibration", "activations") / 10


def test_the_hooks_temporaries_are_what_the_hooks_allocate():
    """One bf16 gradient (of the largest weight) at a time; an fp32 product w⊙g only where a term is streamed
    per micro-batch; the folds into fp32 sums convert inside the operation (benchmarks/hook_bytes.py)."""
    shape = _mistral()
    n = shape.largest_weight
    assert hook_bytes(shape, workload(_recipe())) == 2 * n  # first order + statistics: summed from G at the end
    assert hook_bytes(shape, workload(_recipe("stats.collectors=[]"))) == 2 * n + 4 * n  # no G: streamed
    with pytest.warns(Warning, match="switched from 'taylor' to 'fisher'"):
        fisher = workload(_recipe("importance.name=fisher", "~importance.params.granularity"))
    assert hook_bytes(shape, fisher) == 2 * n + 4 * n  # a squared term, streamed per group
    assert hook_bytes(shape, workload(_recipe("importance.params.granularity=element"))) == 2 * n  # adds only
    # FSDP: the term streams (each rank sees whole gradients, the buffer is sharded) and G's part is reduced
    assert hook_bytes(shape, workload(_recipe(), world=2)) == 2 * n + 4 * n + 4 * n
    # on the host the CPU kernels copy each bf16 operand to fp32 first: one copy for a fold or the norm,
    # two for the product w⊙g (beside the product itself) and for the element moment g⊙g
    assert hook_bytes(shape, workload(_recipe()), host_is_device=True) == 2 * n + 4 * n
    assert hook_bytes(shape, workload(_recipe("stats.collectors=[]")), host_is_device=True) == 2 * n + 12 * n
    mix = workload(_recipe("importance.name=taylor_mix", "importance.params={}", "stats.collectors=[]"))
    assert mix.estimator_level == "element"
    assert hook_bytes(shape, mix, host_is_device=True) == 2 * n + 8 * n
    fp32 = workload(_recipe("stats.collectors=[]", "model.dtype=float32", "trainer.precision=32-true"))
    assert hook_bytes(shape, fp32, host_is_device=True) == hook_bytes(shape, fp32) == 4 * n + 4 * n  # no copies


@pytest.mark.slow
@pytest.mark.parametrize("overrides", [[], ["stats.collectors=[]"],
                                       ["importance.name=taylor_mix", "importance.params={}", "stats.collectors=[]"]])
def test_the_hooks_temporaries_on_the_host_are_what_the_cpu_allocates(overrides):
    """The hooks' temporaries for one bf16 gradient on the CPU, measured in a fresh process (the resident
    set's high-water mark), against the plan's count on the host."""
    import json
    import os
    import subprocess
    import sys

    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks/memory_plan.py"), "--hooks", *overrides],
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    assert abs(r["planned"] / r["measured"] - 1) < 0.1, r


def test_batch_size_auto_is_the_largest_micro_batch_that_fits():
    shape = _mistral()
    w = workload(_recipe("calibration.seq_len=256", "calibration.batch_size=auto"))
    assert w.batch_size_auto and w.micro_batch == 1
    gpu = _gpu(60)
    fitted = fit(shape, w, gpu)
    b = fitted.plan.workload.micro_batch
    assert fitted.problem is None and fitted.plan.workload.mean_gradient == "device" and 1 < b < w.num_samples
    assert plan_memory(shape, w.with_batch(b), False).peak <= gpu.usable
    assert plan_memory(shape, w.with_batch(b + 1), False).peak > gpu.usable
    assert any("batch_size auto" in n for n in fitted.notes)
    # a per-sample estimator stays at one sample a time
    per_sample = workload(_recipe("calibration.batch_size=auto", "importance.params.per_sample=true"))
    assert not per_sample.batch_size_auto and per_sample.micro_batch == 1


def test_a_recipe_that_fits_nowhere_is_refused_with_numbers_and_knobs():
    shape = _mistral()
    w = workload(_recipe("calibration.seq_len=2048", "calibration.num_samples=128"))
    fitted = fit(shape, w, _gpu(79))
    text = fitted.problem
    assert text.startswith("calibration needs ") and "at calibration.batch_size 8 (activations " in text
    best = largest_batch(shape, w, _gpu(79), False)
    assert 0 < best < 8 and f"calibration.batch_size ≤ {best} (or auto)" in text
    assert "calibration.gradient_checkpointing: true (≈ " in text and "the GPU has 79.0 GiB free" in text


def test_the_mean_gradient_buffer_moves_to_the_host_only_when_the_exact_mode_does_not_fit():
    shape = _mistral()
    w = workload(_recipe("calibration.seq_len=16"))
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
    w = workload(r, world=8)
    spread = fit(shape, w, _gpu(79, gpus=8))
    assert spread.problem is None and spread.spread_eval  # 129 GiB of weights over 8 GPUs
    assert fit(shape, workload(r, world=2), _gpu(79, gpus=2)).problem is not None


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
