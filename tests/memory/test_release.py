"""Nothing of a calibration, an evaluation or a run stays alive once it returns or raises, without Python's
cycle collector: weak references to the Trainer, the LightningModule, the mean-gradient buffer and the
estimators' accumulators die with the cycle collector switched off."""

from __future__ import annotations

import contextlib
import gc
import weakref

import pytest
import torch

import gradprune.calibration as calibration
import gradprune.trainer as trainer_module
from gradprune import plugins
from gradprune.errors import CalibrationError, PlanError
from gradprune.models.adapters import get_adapter
from gradprune.recipe import TrainerSection, load_recipe
from gradprune.stats.gradient import MeanGradient
from tests.conftest import make_model

CPU = TrainerSection(accelerator="cpu", devices=1, precision="32-true")


@contextlib.contextmanager
def no_cycle_collector():
    """The cycle collector off (what it would have freed stays), on again after."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


@pytest.fixture
def watched(monkeypatch):
    """Weak references to every Trainer, calibration module and mean-gradient sum created in the test."""
    refs: dict[str, list[weakref.ref]] = {"trainer": [], "module": [], "mean_gradient": []}
    build = trainer_module.build_trainer

    def build_trainer(*args, **kwargs):
        t = build(*args, **kwargs)
        refs["trainer"].append(weakref.ref(t))
        return t

    monkeypatch.setattr(trainer_module, "build_trainer", build_trainer)
    init = calibration.CalibrationModule.__init__

    def module_init(self, *args, **kwargs):
        init(self, *args, **kwargs)
        refs["module"].append(weakref.ref(self))

    monkeypatch.setattr(calibration.CalibrationModule, "__init__", module_init)
    end_batch = MeanGradient.end_batch

    def mean_end_batch(self, *args, **kwargs):
        end_batch(self, *args, **kwargs)
        refs["mean_gradient"] += [weakref.ref(t) for t in self.sums.values()]

    monkeypatch.setattr(MeanGradient, "end_batch", mean_end_batch)
    return refs


def alive(refs: dict[str, list[weakref.ref]]) -> dict[str, int]:
    return {k: sum(r() is not None for r in v) for k, v in refs.items()}


def _calibrate(model, estimator, collectors=("grad_norm", "grad_std")):
    layers = get_adapter(model).layers(model)
    cols = [plugins.COLLECTORS.build(c) for c in collectors]
    return calibration.calibrate(model, layers, torch.randint(0, 300, (8, 16)), 4, {"e": estimator}, cols, CPU)


def test_calibration_state_dies_when_calibrate_returns(watched):
    model = make_model()
    mix = plugins.IMPORTANCE.build("taylor_mix")  # element level: Σg shared with the statistics, Σg² its own
    with no_cycle_collector():
        res = _calibrate(model, mix)
        accumulators = [weakref.ref(t) for t in mix.state().values() if t.dim() > 0]
        assert res.scores["e"] and res.layer_stats["grad_norm"]
        assert watched["trainer"] and watched["module"] and watched["mean_gradient"]
        assert alive(watched) == {"trainer": 0, "module": 0, "mean_gradient": 0}
        assert not any(r() is not None for r in accumulators)  # emptied: state() holds nothing parameter-sized
        assert sum(t.numel() for t in mix.state().values()) == 1  # only the sample count is left
        assert mix._shared.sums == {}  # the shared mean-gradient buffer it read is empty
        assert mix.layers == []  # the estimator the caller still holds no longer pins the model


def test_accumulators_die_with_calibration(watched, monkeypatch):
    # the estimator's own parameter-sized sums, watched as they are made
    from gradprune.importance import gradient_sums

    made: list[weakref.ref] = []
    zeros = gradient_sums._zeros_like_in

    def zeros_like_in(store, key, like):
        t = zeros(store, key, like)
        made.append(weakref.ref(t))
        return t

    monkeypatch.setattr(gradient_sums, "_zeros_like_in", zeros_like_in)
    est = plugins.IMPORTANCE.build("taylor", {"granularity": "element"})
    with no_cycle_collector():
        _calibrate(make_model(), est, collectors=())  # no statistics: the estimator keeps its own Σg
        assert made and not any(r() is not None for r in made)


class FailsOnSecondBatch(MeanGradient):
    """Calibration that fails after the mean-gradient buffer exists (a NaN found late, say)."""

    def end_batch(self, *args, **kwargs):
        super().end_batch(*args, **kwargs)
        if float(self._scalars["counts"][1]) >= 2:
            raise CalibrationError("failed on purpose")


def test_calibration_state_dies_after_a_failure(watched, monkeypatch):
    import gradprune.hooks as hooks

    monkeypatch.setattr(hooks, "MeanGradient", FailsOnSecondBatch)
    model = make_model()
    with no_cycle_collector():
        with contextlib.suppress(CalibrationError):
            _calibrate(model, plugins.IMPORTANCE.build("taylor"))
        assert watched["trainer"] and watched["mean_gradient"]
        assert alive(watched) == {"trainer": 0, "module": 0, "mean_gradient": 0}


def _run_recipe(model_dir, corpus_file, *extra):
    return load_recipe("recipes/tiny.yaml", [
        f"model.name_or_path={model_dir}", "calibration.dataset.name=text_file",
        f"calibration.dataset.path={corpus_file}", "calibration.num_samples=8", "calibration.seq_len=16",
        "calibration.batch_size=4", "pruning.attention_layers=[0,4]", "pruning.mlp_layers=[0,4]",
        "importance.params.granularity=element", *extra])


def _model_refs(monkeypatch):
    import gradprune.models.loading as loading

    models: list[weakref.ref] = []
    load = loading.load_model

    def load_model(*args, **kwargs):
        model, tok = load(*args, **kwargs)
        models.append(weakref.ref(model))
        return model, tok

    monkeypatch.setattr(loading, "load_model", load_model)
    return models


@pytest.mark.slow
def test_nothing_of_a_run_survives_it(model_dir, corpus_file, watched, monkeypatch):
    from rich.console import Console

    from gradprune.run import run_experiment

    models = _model_refs(monkeypatch)
    recipe = _run_recipe(model_dir, corpus_file, "eval.run=all", "eval.tasks=[tiny_boolq,tiny_piqa]",
                         "eval.limit=8", "eval.ppl_max_windows=4", "eval.ppl_datasets=[embedded]")
    with no_cycle_collector():
        out = run_experiment(recipe, Console(quiet=True))
        assert out.record["metrics"]["acc_mean"] >= 0
        del out
        assert models and alive({"model": models, **watched}) == {"model": 0, "trainer": 0, "module": 0,
                                                                  "mean_gradient": 0}


def test_nothing_of_a_failed_run_survives_it(model_dir, corpus_file, watched, monkeypatch):
    from rich.console import Console

    import gradprune.pruning.planner as planner
    from gradprune.run import run_experiment

    def no_plan(*args, **kwargs):
        raise PlanError("failed on purpose")

    monkeypatch.setattr(planner, "plan_pruning", no_plan)
    models = _model_refs(monkeypatch)
    with no_cycle_collector():
        with contextlib.suppress(PlanError):
            run_experiment(_run_recipe(model_dir, corpus_file, "eval.run=none"), Console(quiet=True))
        assert models and alive({"model": models, **watched}) == {"model": 0, "trainer": 0, "module": 0,
                                                                  "mean_gradient": 0}
