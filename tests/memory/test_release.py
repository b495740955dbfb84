"""Nothing of a calibration, an evaluation or a run stays alive once it returns or raises, without Python's
cycle collector: weak references to the Trainer, the LightningModule, the sums behind the mean gradient G
and mean square F, and the plugins' accumulators die with the cycle collector switched off."""

from __future__ import annotations

import contextlib
import gc
import os
import subprocess
import sys
import weakref
from pathlib import Path

import pytest
import torch

import gradprune.calibration as calibration
import gradprune.trainer as trainer_module
from gradprune import plugins
from gradprune.calibration_plugin import CalibrationPlugin
from gradprune.errors import CalibrationError, PlanError
from gradprune.models.adapters import get_adapter
from gradprune.moments import MeanMoments
from gradprune.recipe import TrainerSection, load_recipe
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
    """Weak references to every Trainer, calibration module, G/F sum and plugin accumulator created in the test."""
    refs: dict[str, list[weakref.ref]] = {"trainer": [], "module": [], "mean_gradient": [], "accumulator": []}
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
    add = MeanMoments.add

    def moments_add(self, *args, **kwargs):
        add(self, *args, **kwargs)
        refs["mean_gradient"] += [weakref.ref(t) for t in [*self.grad_sums.values(), *self.sq_sums.values()]]

    monkeypatch.setattr(MeanMoments, "add", moments_add)
    accumulator = CalibrationPlugin.accumulator

    def plugin_accumulator(self, *args, **kwargs):
        t = accumulator(self, *args, **kwargs)
        refs["accumulator"].append(weakref.ref(t))
        return t

    monkeypatch.setattr(CalibrationPlugin, "accumulator", plugin_accumulator)
    return refs


def alive(refs: dict[str, list[weakref.ref]]) -> dict[str, int]:
    return {k: sum(r() is not None for r in v) for k, v in refs.items()}


def _calibrate(model, estimator, collectors=("grad_norm", "grad_std")):
    layers = get_adapter(model).layers(model)
    cols = [plugins.COLLECTORS.build(c) for c in collectors]
    return calibration.calibrate(model, layers, torch.randint(0, 300, (8, 16)), 4, {"e": estimator}, cols, CPU)


def test_calibration_state_dies_when_calibrate_returns(watched):
    model = make_model()
    mix = plugins.IMPORTANCE.build("taylor_mix")  # element level: reads G and F, kept once with the statistics'
    with no_cycle_collector():
        res = _calibrate(model, mix)
        assert res.scores["e"] and res.layer_stats["grad_norm"]
        assert all(watched[k] for k in ("trainer", "module", "mean_gradient", "accumulator"))
        assert alive(watched) == {"trainer": 0, "module": 0, "mean_gradient": 0, "accumulator": 0}
        assert mix.state() == {}  # the estimator the caller still holds keeps no accumulator
        assert mix.layers == []  # nor the model


def test_accumulators_die_with_calibration(watched):
    # no statistics: the estimator's own per-row sums of each micro-batch's gradient (vector level)
    est = plugins.IMPORTANCE.build("taylor", {"granularity": "vector"})
    with no_cycle_collector():
        _calibrate(make_model(), est, collectors=())
        assert watched["accumulator"] and not watched["mean_gradient"]  # nothing parameter-sized was kept
        assert alive(watched) == {"trainer": 0, "module": 0, "mean_gradient": 0, "accumulator": 0}


class FailsOnSecondBatch(MeanMoments):
    """Calibration that fails after the G/F sums exist (a NaN found late, say)."""

    def add(self, key, grad, n):
        super().add(key, grad, n)
        self.folded = getattr(self, "folded", 0) + 1
        if self.folded > len(self.weights()):  # the second micro-batch's first gradient
            raise CalibrationError("failed on purpose")


def test_calibration_state_dies_after_a_failure(watched, monkeypatch):
    monkeypatch.setattr(calibration, "MeanMoments", FailsOnSecondBatch)
    model = make_model()
    with no_cycle_collector():
        with pytest.raises(CalibrationError, match="on purpose"):
            _calibrate(model, plugins.IMPORTANCE.build("taylor"))
        assert watched["trainer"] and watched["mean_gradient"]
        assert alive(watched) == {"trainer": 0, "module": 0, "mean_gradient": 0, "accumulator": 0}


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
                                                                  "mean_gradient": 0, "accumulator": 0}


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
                                                                  "mean_gradient": 0, "accumulator": 0}


_FRESH_PROCESS_RUN = """
import gc, sys
import torch
from rich.console import Console
from gradprune.recipe import load_recipe
from gradprune.run import run_experiment
recipe = load_recipe("recipes/tiny.yaml", ["eval.run=none", "importance.params.granularity=element"])
gc.collect()
gc.disable()
out = run_experiment(recipe, Console(quiet=True))
params = out.record["model"]["params_before"]
del out
live = sum(o.numel() for o in gc.get_objects() if isinstance(o, torch.Tensor) and o.numel() > 10000)
print(live, params)
"""


@pytest.mark.slow
def test_nothing_of_a_run_survives_it_in_a_fresh_process():
    # in a fresh process the run itself imports lightning and transformers, whose imports leave garbage
    # cycles holding the importing frames (and through them the run's frame, with the model)
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(root)}
    proc = subprocess.run([sys.executable, "-c", _FRESH_PROCESS_RUN], cwd=root, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    live, params = map(int, proc.stdout.split()[-2:])
    assert params > 10000 and live == 0, (live, params)
