"""Results that cannot be written — a full disk, no permission — lose nothing: exit 1 (the input was fine),
one line naming the folder, the bytes needed and the free space, the metrics on the terminal, the
previous results untouched and no half-written folder left. The disk is made "full" here by the
failures a full disk raises (ENOSPC, safetensors' SafetensorError); the acceptance check mounts a real
2 MB tmpfs."""

from __future__ import annotations

import errno
import hashlib
import json
from pathlib import Path

import pytest

from gradprune.cli import main
from gradprune.errors import OutputError

ROOT = Path(__file__).resolve().parents[1]
TINY = str(ROOT / "recipes/tiny.yaml")


class SafetensorError(Exception):
    """What safetensors raises when the disk fills while it writes (its own exception class)."""


FULL = 'Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: "No space left on device" })'


def _tree(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _full_while_saving_the_model(model, tokenizer, plan, out_dir, extras=None):
    """save_pruned on a full disk: part of the weights written, then the library's error."""
    Path(out_dir).mkdir(parents=True)
    (Path(out_dir) / "model.safetensors").write_bytes(b"\0" * 1000)
    raise SafetensorError(FULL)


@pytest.fixture(scope="module")
def run_output(model_dir, corpus_file, tmp_path_factory):
    """A finished run (model kept) to write again and again."""
    from gradprune.recipe import load_recipe
    from gradprune.run import run_experiment

    args = [f"model.name_or_path={model_dir}", "calibration.dataset.name=text_file",
            f"calibration.dataset.path={corpus_file}", "calibration.num_samples=8", "calibration.seq_len=16",
            "calibration.batch_size=4", "eval.run=none", "pruning.attention_layers=[0,4]", "pruning.mlp_layers=[0,4]"]
    return run_experiment(load_recipe(TINY, args), keep_model=True)


def test_overwrite_on_a_full_disk_keeps_the_previous_run_and_prints_the_metrics(recipe_args, tmp_path,
                                                                                 monkeypatch, capfd):
    out = tmp_path / "out"
    assert main(["run", TINY, *recipe_args]) == 0
    before = _tree(tmp_path)
    capfd.readouterr()
    monkeypatch.setattr("gradprune.cut.checkpoint.save_pruned", _full_while_saving_the_model)
    code = main(["run", TINY, *recipe_args, "pruning.ratio=0.3", "output.save_model=true", "--overwrite"])
    stdout, err = capfd.readouterr()
    assert code == 1 and "Traceback" not in err, err
    (line,) = [x for x in err.splitlines() if x.startswith("error: ")]
    assert f"disk full while writing {out}" in line and "MB needed, free space" in line
    assert line.endswith("nothing was replaced")
    assert _tree(tmp_path) == before  # the earlier run whole, no half-written model, no temp folder
    assert not (out / "model").exists() and sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    # the hour of evaluation behind the numbers is not lost with the files
    shown = json.loads(stdout.split("the run's metrics (not written): ", 1)[1].splitlines()[0])
    assert shown["target_ratio"] == 0.3 and shown["params_after"] < shown["params_before"]
    assert "run summary" in stdout


def test_too_little_free_space_is_refused_before_anything_is_written(run_output, tmp_path, monkeypatch):
    from gradprune.record import model_bytes, write_output

    monkeypatch.setattr("gradprune.files.free_bytes", lambda path: 1000)  # a disk with 1000 bytes left
    target = tmp_path / "results" / "run"
    with pytest.raises(OutputError) as info:
        write_output(run_output, target, save_model=True)
    assert "disk full while writing" in str(info.value) and "free space 0.000954 MB" in str(info.value)
    needed = float(str(info.value).split(": ")[1].split(" MB")[0])
    assert needed * 2**20 >= model_bytes(run_output.model)  # the pruned weights are counted
    assert not (tmp_path / "results").exists() or not any((tmp_path / "results").iterdir())


@pytest.mark.parametrize("failure, kind", [
    (OSError(errno.ENOSPC, "No space left on device"), "disk full"),
    (PermissionError(errno.EACCES, "Permission denied"), "permission denied"),
    (OSError(errno.EROFS, "Read-only file system"), "permission denied"),
])
def test_a_failed_write_leaves_no_half_written_folder(run_output, tmp_path, monkeypatch, failure, kind):
    from gradprune.record import write_output

    target = tmp_path / "run"
    write_output(run_output, target, save_model=False)
    (target / "notes.txt").write_text("the user's own file\n")
    before = _tree(tmp_path)
    import gradprune.files

    real, calls = gradprune.files.atomic_write_bytes, []

    def fail_on_the_third(path, data):
        calls.append(path)
        if len(calls) == 3:
            raise failure
        return real(path, data)

    monkeypatch.setattr("gradprune.record.atomic_write_bytes", fail_on_the_third)
    with pytest.raises(OutputError, match=f"{kind} while writing .*nothing was replaced"):
        write_output(run_output, target, save_model=False)
    assert _tree(tmp_path) == before and sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_a_new_run_replaces_every_result_of_the_old_one_and_nothing_else(run_output, tmp_path):
    from gradprune.record import write_output

    target = tmp_path / "run"
    write_output(run_output, target, save_model=True)
    assert (target / "model" / "gradprune_checkpoint.json").is_file()
    (target / "notes.txt").write_text("mine\n")
    write_output(run_output, target, save_model=False)  # an earlier model must not pass for this run's
    assert sorted(p.name for p in target.iterdir()) == ["layers.csv", "notes.txt", "plan.json", "run.json",
                                                        "scores.safetensors"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # the staging folder is gone


def test_analyze_writes_all_of_its_files_or_none(tmp_path, monkeypatch, capfd):
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(0)
    g = rng.uniform(2, 40, 12)
    csv = tmp_path / "search_results.csv"
    pd.DataFrame({"trial": range(12), "success": True, "taylor_seq_len": rng.choice([16, 32, 64], 12),
                  "grad_norm_ratio": g, "acc_mean": 0.7 - 0.004 * g + rng.normal(0, 0.005, 12)}).to_csv(csv, index=False)
    assert main(["analyze", str(csv), "--output_dir", str(tmp_path / "a")]) == 0
    before = _tree(tmp_path)
    import gradprune.files

    real, calls = gradprune.files._write_synced, []

    def full_on_the_fourth(path, data):
        calls.append(path)
        if len(calls) == 4:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(path, data)

    monkeypatch.setattr(gradprune.files, "_write_synced", full_on_the_fourth)
    capfd.readouterr()
    assert main(["analyze", str(csv), "--output_dir", str(tmp_path / "a"), "--overwrite", "--seed", "3"]) == 1
    err = capfd.readouterr().err
    assert "disk full while writing" in err and "nothing was replaced" in err and "Traceback" not in err
    assert _tree(tmp_path) == before  # every earlier file as it was, no temp file left


def test_preflight_says_up_front_that_the_dense_cache_cannot_be_written(tmp_path, monkeypatch):
    from gradprune.preflight import preflight
    from gradprune.recipe import load_recipe

    blocker = tmp_path / "file"
    blocker.write_text("x")
    monkeypatch.setenv("GRADPRUNE_CACHE", str(blocker / "cache"))
    report = preflight(load_recipe(TINY, ["eval.tasks=[tiny_piqa]"]), hardware=False)
    assert any("dense metrics will not be cached" in n and "GRADPRUNE_CACHE" in n for n in report.notes)
    assert "dense metrics will not be cached" in report.describe()


def test_preflight_warns_when_the_pruned_model_will_not_fit_on_the_disk(tmp_path, monkeypatch):
    from gradprune.preflight import preflight
    from gradprune.recipe import load_recipe

    recipe = load_recipe(TINY, ["eval.run=none", "output.save_model=true"])
    monkeypatch.setattr("gradprune.files.free_bytes", lambda path: 2 * 2**20)
    report = preflight(recipe, out_dir=tmp_path / "out", hardware=False)
    (note,) = [n for n in report.notes if "output.save_model" in n]
    assert "has 2 MB free" in note and "needs about 5.33 MB" in note  # 1.75 M fp32 parameters, 20 % pruned
    monkeypatch.setattr("gradprune.files.free_bytes", lambda path: 2**30)
    assert not [n for n in preflight(recipe, out_dir=tmp_path / "out", hardware=False).notes if "save_model" in n]
