"""The recovery stage in the memory plan: what autograd keeps while LoRA trains matches the formula, the
refusal names the recovery knobs, the stage's out-of-memory message; capacities are mocked (no GPU needed)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from gradprune.memory.capacity import Capacity
from gradprune.memory.fit import fit
from gradprune.memory.plan import plan_memory
from gradprune.memory.recovery import lora_params, lora_stack_bytes
from gradprune.memory.shape import model_shape
from gradprune.memory.table import load_config
from gradprune.memory.workload import LORA_PROJECTIONS, RecoveryLoad, workload
from gradprune.recipe import load_recipe
from tests.conftest import make_model
from tests.memory.test_plan import saved_bytes

ROOT = Path(__file__).resolve().parents[2]
GiB = 2**30


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("dropout", [0.0, 0.05])
@pytest.mark.parametrize("padded", [False, True])
def test_what_autograd_keeps_while_lora_trains_is_the_formula(dtype, dropout, padded):
    from gradprune.recovery.lora import LoRAParams, LoRARecovery

    model = make_model(vocab_size=500, tie_word_embeddings=False).to(dtype)
    shape = model_shape(model.config)
    method = LoRARecovery(LoRAParams(r=8, dropout=dropout))
    model.requires_grad_(False)
    for t in method.attach(model):
        t.requires_grad_(True)
    model.train()
    b, seq = 3, 24
    mask = torch.ones(b, seq, dtype=torch.long)
    if padded:  # a micro-batch of instruction records: the shorter ones padded on the right
        mask[0, -5:] = 0
    measured = saved_bytes(model, torch.randint(0, 500, (b, seq)), mask)  # only the adapters train
    rec = RecoveryLoad(micro_batch=b, batch_size=b, cutoff_len=seq, checkpointing=False, rank=8,
                       projections=LORA_PROJECTIONS, dropout=dropout > 0, padded=padded)
    d = torch.finfo(dtype).bits // 8
    # every layer's part, and the fp32 log-probabilities (the plan's "activations" line)
    formula = b * seq * (lora_stack_bytes(shape, rec, d, host_is_device=True) + 4 * shape.vocab)
    assert abs(formula / measured - 1) < 0.01, (formula, measured)
    method.release(model)


def _mistral_recovery(*overrides):
    shape = model_shape(load_config(ROOT / "docs/model_configs/mistral-7b-v0.3.json"))
    return shape, workload(load_recipe(ROOT / "recipes/mistral_20_recovery.yaml", list(overrides)))


def _gpu(gib: float) -> Capacity:
    return Capacity("cuda", "test GPU", int(gib * GiB), int(gib * GiB), 1)


def test_the_recovery_stage_has_its_lines_and_the_adapters_follow_the_rank():
    shape, w = _mistral_recovery()
    plan = plan_memory(shape, w, False, _gpu(80))
    assert plan.stages()[-2:] == ["recovery", "recovered eval"]
    pruned = int(shape.params * 2 * (1 - w.ratio))
    assert plan.item("recovery", "weights") == pruned == plan.item("recovered eval", "weights")
    # r 8 on the 7 projections of 32 layers, r × (in + out) each: q and o 4096 + 4096, k and v 4096 + 1024,
    # gate, up and down 4096 + 14336
    assert lora_params(shape, w.recovery) == 32 * 8 * (2 * 8192 + 2 * 5120 + 3 * 18432)
    assert plan.item("recovery", "adapters") == 16 * lora_params(shape, w.recovery)  # + grads + 2 AdamW moments
    _, r16 = _mistral_recovery("recovery.params.r=16")
    assert lora_params(shape, r16.recovery) == 2 * lora_params(shape, w.recovery)
    # checkpointing keeps one input per layer; without it the micro-batch's activations dominate
    _, full = _mistral_recovery("recovery.params.gradient_checkpointing=false")
    assert plan_memory(shape, full, False).item("recovery", "activations") > 10 * plan.item("recovery", "activations")


def test_a_recovery_that_fits_nowhere_is_refused_with_its_knobs():
    shape, w = _mistral_recovery("recovery.params.gradient_checkpointing=false", "recovery.params.micro_batch_size=64")
    fitted = fit(shape, w, _gpu(80))
    text = fitted.problem
    assert text is not None and text.startswith("recovery needs ") and "micro_batch_size 64 × cutoff_len 256" in text
    smaller = int(text.split("recovery.params.micro_batch_size ≤ ")[1].split(" ")[0])
    assert 64 % smaller == 0 and smaller < 64  # a divisor: a step still accumulates whole micro-batches
    fits = plan_memory(shape, w.with_recovery(w.recovery.with_micro_batch(smaller)), False, _gpu(80))
    assert fits.stage_peak("recovery") <= _gpu(80).usable
    double = plan_memory(shape, w.with_recovery(w.recovery.with_micro_batch(2 * smaller)), False, _gpu(80))
    assert double.stage_peak("recovery") > _gpu(80).usable
    assert "recovery.params.gradient_checkpointing: true (≈ " in text
    assert "calibration" not in text  # calibration fits: only the stage that does not is named


def test_an_out_of_memory_error_in_recovery_names_its_stage_and_knobs():
    from gradprune.memory.watch import MemoryWatch

    shape, w = _mistral_recovery()
    watch = MemoryWatch(fit(shape, w, _gpu(80)), "cpu")
    watch.enter("recovery")
    err = str(watch.out_of_memory("CUDA out of memory. Tried to allocate 2.00 GiB"))
    watch.record()
    assert "out of memory in recovery (the plan estimated " in err
    assert "recovery.params.micro_batch_size" in err and "recovery.params.gradient_checkpointing: true" in err
