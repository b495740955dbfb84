"""``gradprune run`` end to end on a tiny model: records, save/load, plugins, and bad input → exit 2."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

from gradprune import plugins
from gradprune.cli import main

ROOT = Path(__file__).resolve().parents[1]
TINY = str(ROOT / "recipes/tiny.yaml")


def test_run_writes_record_with_named_statistics(recipe_args, tmp_path, capsys):
    assert main(["run", TINY, *recipe_args, "pruning.ratio=0.3"]) == 0
    out = tmp_path / "out"
    rec = json.loads((out / "run.json").read_text())
    m = rec["metrics"]
    for k in ("grad_norm_ratio", "grad_mean_ratio", "grad_std_ratio", "grad_max_ratio",
              "extreme_pruning_layers", "pruning_ratio", "taylor_seq_len", "taylor_num_samples"):
        assert k in m, k
    assert abs(m["pruning_ratio"] - 0.3) < 0.02
    assert m["params_after"] < m["params_before"]
    assert rec["recipe"]["pruning"]["ratio"] == 0.3
    assert rec["calibration"]["windows"]["sha256"] and rec["versions"]["torch"]
    assert len(rec["stats"]["per_layer"]["grad_norm"]) == 4
    rows = list(csv.DictReader((out / "layers.csv").open()))
    assert len(rows) == 4 and {"kv_groups_kept", "mlp_channels_kept", "pruning_rate", "grad_norm"} <= set(rows[0])
    assert (out / "plan.json").exists() and (out / "scores.safetensors").exists()
    assert "run summary" in capsys.readouterr().out


def test_existing_results_are_not_overwritten(recipe_args, tmp_path):
    assert main(["run", TINY, *recipe_args]) == 0
    before = (tmp_path / "out/run.json").read_bytes()
    assert main(["run", TINY, *recipe_args, "pruning.ratio=0.4"]) == 2
    assert (tmp_path / "out/run.json").read_bytes() == before
    assert main(["run", TINY, *recipe_args, "pruning.ratio=0.4", "--overwrite"]) == 0


def test_save_model_round_trip(recipe_args, tmp_path):
    import torch

    from gradprune import load_pruned
    from gradprune.models.loading import load_model
    from gradprune.recipe import load_recipe
    from gradprune.record import write_output
    from gradprune.run import run_experiment

    recipe = load_recipe(TINY, [*recipe_args, "output.save_model=true"])
    out = run_experiment(recipe, keep_model=True)
    write_output(out, tmp_path / "o2", save_model=True)
    model, tok, plan = load_pruned(tmp_path / "o2/model")
    ids = torch.randint(0, 200, (2, 12))
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, out.model(ids).logits, rtol=0, atol=0)
    assert plan.to_dict() == out.plan.to_dict()
    del load_model


@pytest.mark.parametrize("name", plugins.IMPORTANCE.names())
def test_every_estimator_runs_end_to_end(name, recipe_args, tmp_path):
    assert main(["run", TINY, *recipe_args, f"importance.name={name}", "~importance.params",
                 "normalizer.name=rank"]) == 0
    m = json.loads((tmp_path / "out/run.json").read_text())["metrics"]
    assert abs(m["pruning_ratio"] - 0.2) < 0.02


def test_third_party_plugins_through_entry_points(monkeypatch, recipe_args, tmp_path):
    eps = {"gradprune.importance": [("grad_sign", "tests.plugin_fixture.ext:GradSignImportance")],
           "gradprune.collectors": [("grad_l1", "tests.plugin_fixture.ext:GradL1Collector")]}
    real = metadata.entry_points

    def fake(**kw):
        g = kw.get("group")
        if g in eps:
            return [metadata.EntryPoint(name=n, value=v, group=g) for n, v in eps[g]]
        return real(**kw)

    monkeypatch.setattr(metadata, "entry_points", fake)
    with plugins.IMPORTANCE.scoped(reread_entry_points=True), plugins.COLLECTORS.scoped(reread_entry_points=True):
        assert main(["run", TINY, *recipe_args, "importance.name=grad_sign", "~importance.params",
                     "stats.collectors=[grad_norm, grad_l1]"]) == 0
    rec = json.loads((tmp_path / "out/run.json").read_text())
    assert "grad_l1_ratio" in rec["metrics"] and len(rec["stats"]["per_layer"]["grad_l1"]) == 4


BAD_RUNS = [
    (["calibration.seq_len=100000"], "max_position_embeddings"),
    (["pruning.mlp_layers=[0, 9]"], "outside the model"),
    (["calibration.num_samples=100000"], "num_samples=100000"),
    (["model.name_or_path=/nonexistent/model"], "/nonexistent/model"),
    (["pruning.ratio=0.95"], "removable"),
    (["pruning.ratoi=0.3"], "Did you mean 'ratio'"),
    (["importance.name=tylor"], "Did you mean 'taylor'"),
]


@pytest.mark.parametrize("extra,fragment", BAD_RUNS, ids=[b[0][0] for b in BAD_RUNS])
def test_bad_run_input_exit_2_nothing_written(extra, fragment, recipe_args, tmp_path, capsys):
    # in-process: main() returns 2 only when it caught a GradpruneError (anything else propagates)
    assert main(["run", TINY, *recipe_args, *extra]) == 2
    err = capsys.readouterr().err
    assert fragment in " ".join(err.split()), err
    assert not (tmp_path / "out").exists()


def test_unsupported_architecture(tmp_path, recipe_args, tokenizer):
    import transformers as tf

    d = tmp_path / "gpt2"
    tf.GPT2LMHeadModel(tf.GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=len(tokenizer))).save_pretrained(d)
    tokenizer.save_pretrained(d)
    r = subprocess.run([sys.executable, "-m", "gradprune.cli", "run", TINY, *recipe_args,
                        f"model.name_or_path={d}"], capture_output=True, text=True)
    assert r.returncode == 2 and "gpt2" in r.stderr and "llama" in r.stderr and "Traceback" not in r.stderr


def test_missing_recipe_file(tmp_path):
    r = subprocess.run([sys.executable, "-m", "gradprune.cli", "run", str(tmp_path / "nope.yaml")],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "does not exist" in r.stderr and "Traceback" not in r.stderr
