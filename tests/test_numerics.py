"""The dense baseline is scored with the pruned model's dtype, buffers and kernels: a plan that removes
nothing gives exactly the dense numbers, under bf16-true as under 32-true (calibration included)."""

from __future__ import annotations

from pathlib import Path

import pytest

from gradprune.pruning.plan import LayerPlan, Plan
from gradprune.recipe import load_recipe
from gradprune.run import run_experiment

TINY = str(Path(__file__).resolve().parents[1] / "recipes/tiny.yaml")


def _keep_everything(scores, layers, total_params, cfg, model_type):
    return Plan(model_type, [LayerPlan(lm.index, list(range(lm.n_kv)), list(range(lm.n_channels)))
                             for lm in layers])


@pytest.mark.parametrize(("dtype", "precision"), [("float32", "32-true"), ("bfloat16", "bf16-true")])
def test_a_zero_plan_reproduces_the_dense_metrics_exactly(monkeypatch, tmp_path, dtype, precision):
    import gradprune.pruning.planner as planner

    monkeypatch.setattr(planner, "plan_pruning", _keep_everything)
    recipe = load_recipe(TINY, [f"model.dtype={dtype}", f"trainer.precision={precision}",
                                "calibration.num_samples=16", "eval.ppl_max_windows=16", "eval.limit=40",
                                "eval.tasks=[tiny_piqa,tiny_arc]", f"output.dir={tmp_path}"])
    out = run_experiment(recipe)
    m = out.record["metrics"]
    assert m["params_after"] == m["params_before"]
    assert m["ppl"] == m["dense_ppl"] and m["ppl_ratio"] == 1.0
    assert m["acc_drop"] == 0.0 and m["acc_mean"] == m["dense_acc_mean"]
    assert m["proxy_kl"] == 0.0 and m["proxy_flip"] == 0.0 and m["proxy_loss"] == m["proxy_dense_loss"]
    assert out.record["dtype"] == dtype
    assert set(out.record["devices"].values()) == {"cpu"}
    assert set(out.record["devices"]) == {"load", "dense_eval", "calibration", "surgery", "eval"}


@pytest.mark.parametrize(("dtype", "precision"), [("float32", "bf16-true"), ("bfloat16", "32-true"),
                                                  ("float16", "bf16-mixed")])
def test_a_precision_that_would_convert_the_model_is_refused(dtype, precision):
    from gradprune.errors import RecipeError

    with pytest.raises(RecipeError, match="model.dtype"):
        load_recipe(TINY, [f"model.dtype={dtype}", f"trainer.precision={precision}"])


def test_16_mixed_is_refused_for_its_loss_scaling():
    from gradprune.errors import RecipeError

    with pytest.raises(RecipeError, match="GradScaler"):
        load_recipe(TINY, ["trainer.precision=16-mixed"])
