"""One rule for the evaluation's batches: the memory plan sizes its evaluation lines with the function and
the budget the evaluation then runs with, so the batch that runs is the one the plan counted. A GPU's
capacity is mocked (the evaluation itself runs on the CPU, handed the plan's budget as on a GPU)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from gradprune.eval.batching import device_budget, lm_eval_rows
from gradprune.eval.perplexity import evaluate_ppl
from gradprune.memory import batches
from gradprune.memory.capacity import Capacity
from gradprune.memory.evaluation import widths
from gradprune.memory.fit import fit
from gradprune.memory.shape import model_shape
from gradprune.memory.watch import MemoryWatch
from gradprune.memory.workload import workload
from gradprune.recipe import load_recipe
from tests.conftest import make_model

ROOT = Path(__file__).resolve().parents[2]
SEQ = 32


def _recipe(*extra):
    return load_recipe(ROOT / "recipes/tiny.yaml", ["eval.run=ppl", "eval.ppl_datasets=[embedded]",
                                                    f"eval.ppl_seq_len={SEQ}", "eval.batch_size=auto",
                                                    "eval.proxy_windows=0", "eval.ppl_max_windows=40", *extra])


def _windows(line: str) -> int:
    return int(re.match(r"perplexity batch \((\d+) × ", line).group(1))


def test_the_perplexity_batch_that_runs_is_the_one_the_plan_sized(tokenizer):
    model = make_model(vocab_size=len(tokenizer))
    shape, recipe = model_shape(model.config), _recipe()
    per_window = SEQ * (batches.ppl_logit_bytes(4) * shape.vocab + batches.inference_token_bytes(*widths(shape), 4))
    weights = shape.params * 4
    # a GPU whose room beside the pruned weights holds about 11 windows at half of it
    free = int((weights * 0.8 + 2 * 11.5 * per_window) / 0.9)
    fitted = fit(shape, workload(recipe), Capacity("cuda", "test GPU", free, free, 1))
    plan = fitted.plan
    budget = plan.budgets["eval"]
    assert budget == int((int(free * 0.9) - plan.item("eval", "weights")) * batches.DEVICE_FRACTION)
    line = next(ln for ln in plan.lines if ln.stage == "eval" and ln.item.startswith("perplexity batch"))
    planned = _windows(line.item)
    assert 5 < planned < 40 and line.bytes == planned * per_window <= budget  # sized by the budget, not a cap
    watch = MemoryWatch(fitted, "cpu")
    watch.enter("eval")  # as a run enters its evaluation: the evaluation is handed the stage's budget
    try:
        assert device_budget("cpu") == budget
        _, info = evaluate_ppl(model, tokenizer, recipe.eval)
        # lm-eval's rows at any request length come from the same rule and budget
        rows = lm_eval_rows(model, 48)
    finally:
        watch.record()
    assert info["windows_per_batch"][str(SEQ)] == planned
    per_row = 48 * (batches.lm_eval_logit_bytes(4) * shape.vocab + batches.inference_token_bytes(*widths(shape), 4))
    assert rows == budget // per_row and rows * per_row <= budget
    assert device_budget("cpu") is None  # the budget went with the run
    # the dense model's evaluation had its own room: the unpruned weights
    assert plan.budgets["dense eval"] < budget


def test_on_the_cpu_the_plan_and_the_evaluation_keep_the_fixed_rule(tokenizer):
    model = make_model(vocab_size=len(tokenizer))
    shape, recipe = model_shape(model.config), _recipe()
    fitted = fit(shape, workload(recipe), Capacity("cpu", "host memory (test)", 2**34, 2**34))
    assert fitted.plan.budgets["eval"] is None
    line = next(ln for ln in fitted.plan.lines if ln.stage == "eval" and ln.item.startswith("perplexity"))
    watch = MemoryWatch(fitted, "cpu")
    watch.enter("eval")
    try:
        _, info = evaluate_ppl(model, tokenizer, recipe.eval)
    finally:
        watch.record()
    expected = batches.ppl_windows("auto", SEQ, shape.vocab)  # fp32 logits of at most 256 MiB, at most 64
    assert expected == batches.CPU_MAX_WINDOWS
    assert info["windows_per_batch"][str(SEQ)] == expected and _windows(line.item) == 40  # eval.ppl_max_windows


@pytest.mark.parametrize("setting,rows", [("eval.batch_size=16", "16 × 512"), ("eval.max_batch_size=32", "1 × 512")])
def test_an_lm_eval_batch_the_budget_does_not_size_is_counted_as_lm_eval_takes_it(tokenizer, setting, rows):
    """A number of rows, or lm-eval's own search (a capped ``max_batch_size``): the requests' lengths are the
    data's, so the plan counts requests of 512 tokens (one, for the search)."""
    model = make_model(vocab_size=len(tokenizer))
    shape = model_shape(model.config)
    recipe = _recipe("eval.run=zeroshot", setting)
    plan = fit(shape, workload(recipe), Capacity("cuda", "test GPU", 2**34, 2**34, 1)).plan
    line = next(ln for ln in plan.lines if ln.stage == "eval" and ln.item.startswith("lm-eval"))
    assert f"{rows} " in line.item
