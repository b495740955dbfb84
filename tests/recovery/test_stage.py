"""The recovery stage in a run of the embedded model: held-out perplexity, records, saving, Ctrl-C, bad input."""

from __future__ import annotations

import gc
import json
import signal
import warnings
from pathlib import Path

import pytest
import torch

from gradprune import plugins
from gradprune.cli import main
from gradprune.recipe import load_recipe

ROOT = Path(__file__).resolve().parents[2]
RECIPE = str(ROOT / "recipes/tiny_recovery.yaml")
# a short calibration and no dense or proxy evaluation: what is tested here comes after them
QUICK = ["calibration.num_samples=16", "eval.dense=false", "eval.proxy_windows=0"]


def test_recovery_lowers_the_held_out_perplexity_of_a_40_percent_pruned_model():
    """Trained on the embedded corpus (assets/corpus/calibration.txt), scored on the held-out text
    (assets/corpus/ppl.txt) before and after, with the same windows."""
    from gradprune.run import run_experiment

    recipe = load_recipe(RECIPE, [*QUICK, "pruning.ratio=0.4", "eval.run=ppl", "eval.ppl_max_windows=50",
                                  "recovery.params.max_steps=20"])
    gc.disable()  # what is alive after the run is then held by something, not waiting for a collection
    try:
        out = run_experiment(recipe, keep_model=True)
        # the training's Trainer and LightningModule hold each other, and so the optimizer and its states
        with warnings.catch_warnings():  # isinstance on every live object touches deprecated module attributes
            warnings.simplefilter("ignore", FutureWarning)
            assert not [o for o in gc.get_objects() if isinstance(o, torch.optim.Optimizer)]
    finally:
        gc.enable()
    m, rec = out.record["metrics"], out.record["recovery"]
    assert m["pruning_ratio"] == pytest.approx(0.4, abs=0.01)
    assert m["ppl_recovered"] < m["ppl"]  # the untuned value is kept beside it
    assert m["ppl_embedded_recovered"] == m["ppl_recovered"]
    losses = [loss for _, loss, _ in rec["loss_curve"]]
    assert len(losses) == m["recovery_steps"] == 20
    assert sum(losses[-5:]) < sum(losses[:5])
    assert m["recovery_tokens"] == 20 * 8 * 128 == rec["tokens"]  # 20 steps of 8 windows of 128 tokens
    assert m["recovery_peak_memory_mb"] > 0 and m["time_recovery"] > 0 and m["time_eval_recovered"] > 0
    assert rec["adapted_modules"] == 28 and rec["data"]["source"] == "embedded corpus"
    assert out.record["devices"]["recovery"] == "cpu"
    # the run hands back the untuned model: plain Linears, every parameter as trainable as before
    assert all(type(lm.q) is torch.nn.Linear for lm in _layers(out.model))
    assert all(p.requires_grad for p in out.model.parameters())
    assert out.recovery.method.state  # the adapter, kept for the checkpoint
    # the training and the evaluation after it are stages of the memory plan, each estimate beside its peak
    stages = out.record["memory"]["stages"]
    assert stages["recovery"]["estimate_bytes"] > 0 and stages["recovery"]["peak_bytes"] > 0
    assert stages["recovered eval"]["estimate_bytes"] > 0
    assert rec["peak_memory"]["mb"] == stages["recovery"]["peak_bytes"] / 2**20


def _layers(model):
    from gradprune.models.adapters import get_adapter

    return get_adapter(model).layers(model)


def test_recovery_with_eval_none_saves_the_adapter_and_the_merged_model(tmp_path):
    from gradprune.cut.checkpoint import load_pruned

    out = tmp_path / "out"
    assert main(["run", RECIPE, *QUICK, "eval.run=none", "recovery.params.max_steps=3", "output.save_model=true",
                 "recovery.save_merged=true", f"output.dir={out}"]) == 0
    record = json.loads((out / "run.json").read_text())
    m = record["metrics"]
    assert m["recovery_steps"] == 3 and record["recovery"]["eval"] == {"run": "none"}
    assert not [k for k in m if k.endswith("_recovered") and not k.startswith("time_")]  # nothing evaluated
    manifest = json.loads((out / "model/gradprune_checkpoint.json").read_text())
    assert manifest["recovery"] == {"method": "lora", "format": "peft", "adapter": "adapter", "merged": "merged"}
    merged, tok, plan = load_pruned(out / "model")
    unmerged, _, _ = load_pruned(out / "model", merge=False)
    untuned, _, _ = load_pruned(out / "model", recovered=False)
    assert merged.gradprune_recovery["form"] == "merged checkpoint"
    assert untuned.gradprune_recovery["state"] == "untuned"
    ids = tok("Anna has a red cup. Question: does Anna have a red cup?\nAnswer:", return_tensors="pt").input_ids
    with torch.no_grad():
        a, b, c = merged(ids).logits, unmerged(input_ids=ids).logits, untuned(ids).logits
    assert torch.allclose(a, b, atol=1e-4, rtol=0)  # merged and unmerged: the same model
    assert not torch.allclose(a, c, atol=1e-3)


INTERRUPTS = '''
import signal
from gradprune.recovery.lora import LoRARecovery


class InterruptedLoRA(LoRARecovery):
    """LoRA whose second training forward is interrupted (Ctrl-C)."""

    def attach(self, model):
        calls = []

        def press_ctrl_c(module, args):
            calls.append(1)
            if module.training and len(calls) == 2:
                signal.raise_signal(signal.SIGINT)

        model.register_forward_pre_hook(press_ctrl_c)
        return super().attach(model)
'''


@pytest.fixture
def interrupted_lora(tmp_path, register):
    """A recovery plugin ``interrupted_lora``, registered for this test only."""
    if signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        pytest.skip("another SIGINT handler is installed in this process")
    namespace: dict = {}
    exec(compile(INTERRUPTS, "interrupts.py", "exec"), namespace)  # noqa: S102 - the test's own source
    register(plugins.RECOVERY, "interrupted_lora", namespace["InterruptedLoRA"])


def test_ctrl_c_during_recovery_exits_130_and_writes_nothing(interrupted_lora, tmp_path, capfd):
    out = tmp_path / "out"
    code = main(["run", RECIPE, *QUICK, "eval.run=none", "recovery.name=interrupted_lora", "output.save_model=true",
                 f"output.dir={out}"])
    err = capfd.readouterr().err
    assert code == 130 and "interrupted" in err and "Traceback" not in err
    assert not out.exists()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


@pytest.mark.parametrize("override, fragment", [
    ("recovery.params.target_modules=[no_such_proj]", "'no_such_proj' is not a projection"),
    ("recovery.params.r=0", "recovery.params.r: Input should be greater than or equal to 1"),
    ("recovery.save_merged=true", "recovery.save_merged saves the merged model beside the pruned one"),
    ("trainer.devices=2", "recovery trains on the one device that holds the pruned model"),
])
def test_bad_recovery_settings_exit_2_before_the_model_loads(override, fragment, tmp_path, capfd):
    assert main(["run", RECIPE, override, f"output.dir={tmp_path / 'out'}"]) == 2
    err = capfd.readouterr().err
    assert fragment in " ".join(err.split()) and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_instruction_file_without_the_templates_fields_exits_2_in_preflight(tmp_path, capfd):
    data = tmp_path / "chat.jsonl"
    data.write_text(json.dumps({"prompt": "Hi", "completion": "Hello"}) + "\n")
    code = main(["run", RECIPE, "recovery.dataset.name=instructions", f"recovery.dataset.path={data}",
                 f"output.dir={tmp_path / 'out'}"])
    captured = capfd.readouterr()
    text = " ".join(captured.err.split())
    assert code == 2 and "Traceback" not in captured.err
    assert f"recovery.dataset: {data}:1 has no text field 'instruction', 'output'" in text
    assert "calibrat" not in captured.out.lower() and not (tmp_path / "out").exists()
