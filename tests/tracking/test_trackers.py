"""Each tracker receives a run's recipe, metrics, calibration losses and files, read back with the
tracker's own reader; a search's trials are grouped; an analysis attaches to the group; a failing
tracker warns once and keeps the run's files."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest

from gradprune.errors import GradpruneWarning, RecipeError
from gradprune.plugin_sections import PluginSection
from gradprune.tracking import records
from gradprune.tracking.records import TRACKING, attach_analysis, log_run, log_trial, start_search

from .conftest import LOSSES, wandb_records


class _Recipe:
    def __init__(self, name: str, **params) -> None:
        self.logger = PluginSection(name=name, params=params)


@pytest.fixture(autouse=True)
def _fresh(monkeypatch, tmp_path):
    monkeypatch.setattr(records, "_off", set())  # "warn once" is per process: each test starts clean
    monkeypatch.chdir(tmp_path)  # MLflow's default artifact store is ./mlruns of the working directory


def _no_warnings(fn):
    with warnings.catch_warnings():
        warnings.simplefilter("error", GradpruneWarning)
        return fn()


def test_mlflow_sqlite_store_reads_back_params_metrics_losses_and_artifacts(run_dir, tmp_path):
    pytest.importorskip("mlflow")
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'ml.db'}"
    _no_warnings(lambda: log_run(_Recipe("mlflow", tracking_uri=uri, experiment_name="exp"), run_dir))
    client = MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("exp").experiment_id])
    assert run.data.metrics["acc_mean"] == pytest.approx(0.61)
    assert run.data.metrics["ppl"] == pytest.approx(12.5)
    assert "calibration_loss" not in run.data.metrics  # None in run.json: nothing to log
    assert [m.value for m in sorted(client.get_metric_history(run.info.run_id, "calibration/loss"),
                                    key=lambda m: m.step)] == LOSSES
    assert run.data.params["pruning/ratio"] == "0.2" and run.data.params["model/name_or_path"] == "embedded"
    assert {a.path for a in client.list_artifacts(run.info.run_id)} == {"run.json", "layers.csv"}
    assert run.info.status == "FINISHED"


def test_tensorboard_event_files_hold_metrics_losses_and_the_layer_table(run_dir):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    _no_warnings(lambda: log_run(_Recipe("tensorboard"), run_dir))
    (folder,) = (run_dir / "tensorboard" / "gradprune").iterdir()
    ea = EventAccumulator(str(folder), size_guidance={"tensors": 0, "scalars": 0})
    ea.Reload()
    assert [e.value for e in ea.Scalars("calibration/loss")] == LOSSES
    assert ea.Scalars("acc_mean")[0].value == pytest.approx(0.61)
    text = ea.Tensors("layers.csv/text_summary")[0].tensor_proto.string_val[0].decode()
    assert text.startswith("layer | params_before")


def _until_exit(run_file: Path, timeout_s: float = 60.0) -> list:
    """The run file's records once W&B's service wrote the run's exit record (it writes behind finish())."""
    import time

    deadline = time.monotonic() + timeout_s
    while True:
        recs = wandb_records(run_file)
        if any(r.WhichOneof("record_type") == "exit" for r in recs) or time.monotonic() > deadline:
            return recs
        time.sleep(0.5)


def test_wandb_offline_run_file_holds_config_history_and_files(run_dir, tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    _no_warnings(lambda: log_run(_Recipe("wandb", save_dir=str(tmp_path / "wb")), run_dir))
    (run_file,) = (tmp_path / "wb" / "wandb").glob("offline-run-*/run-*.wandb")
    recs = _until_exit(run_file)
    history = [{i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in r.history.item}
               for r in recs if r.WhichOneof("record_type") == "history"]
    assert [h["calibration/loss"] for h in history if "calibration/loss" in h] == LOSSES
    assert any(h.get("acc_mean") == pytest.approx(0.61) for h in history)
    config = {i.key or "/".join(i.nested_key): json.loads(i.value_json)
              for r in recs if r.WhichOneof("record_type") == "config" for i in r.config.update}
    assert "pruning" in config or "pruning/ratio" in config
    saved = {f.path for r in recs if r.WhichOneof("record_type") == "files" for f in r.files.files}
    assert {"run.json", "layers.csv"} <= saved
    assert (run_file.parent / "files" / "layers.csv").read_text() == (run_dir / "layers.csv").read_text()


def test_csv_logger_writes_metrics_params_and_copies(run_dir):
    import pandas as pd

    _no_warnings(lambda: log_run(_Recipe("csv"), run_dir))
    (folder,) = (run_dir / "csv_logs" / "gradprune").iterdir()
    metrics = pd.read_csv(folder / "metrics.csv")
    assert metrics["calibration/loss"].dropna().tolist() == LOSSES
    assert metrics["acc_mean"].dropna().tolist() == [0.61]
    assert "pruning:" in (folder / "hparams.yaml").read_text()
    assert (folder / "layers.csv").exists() and (folder / "run.json").exists()


def test_a_failing_tracker_warns_once_and_leaves_the_run_alone(run_dir, tmp_path):
    pytest.importorskip("mlflow")
    before = (run_dir / "run.json").read_bytes()
    (tmp_path / "a_file").write_text("not a folder")
    bad = _Recipe("mlflow", tracking_uri=f"sqlite:///{tmp_path / 'a_file' / 'ml.db'}")  # cannot be created
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        log_run(bad, run_dir)
        log_run(bad, run_dir)
    mine = [w for w in caught if issubclass(w.category, GradpruneWarning)]
    assert len(mine) == 1 and "logger mlflow" in str(mine[0].message) and "results are written" in str(mine[0].message)
    assert (run_dir / "run.json").read_bytes() == before and (run_dir / "layers.csv").exists()


def _search(tmp_path: Path, section: dict, run_dir: Path) -> Path:
    out = tmp_path / "search"
    for n in (0, 1):
        trial = out / "trials" / f"trial_{n}"
        trial.mkdir(parents=True)
        for f in ("run.json", "layers.csv"):
            (trial / f).write_bytes((run_dir / f).read_bytes())
    start_search(section, "gradprune-abc", out)
    log_trial(out, 0, {"calibration.seq_len": 16}, {"success": True})
    log_trial(out, 1, {"calibration.seq_len": 32}, {"success": True})
    log_trial(out, 2, {"calibration.seq_len": 64}, {"success": False, "error": "CUDA out of memory"})
    (out / "correlation_report.md").write_text("# report\n")
    (out / "paper").mkdir()
    (out / "paper" / "numbers.tex").write_text("\\newcommand{\\gpX}{1}\n")
    where = attach_analysis([out / "search_results.csv"], out, ["correlation_report.md", "paper"])
    assert len(where) == 1
    return out


def test_mlflow_search_is_a_parent_run_with_nested_trials_and_the_analysis(run_dir, tmp_path):
    pytest.importorskip("mlflow")
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'ml.db'}"
    out = _no_warnings(lambda: _search(tmp_path, {"name": "mlflow", "params": {"tracking_uri": uri}}, run_dir))
    meta = json.loads((out / TRACKING).read_text())
    parent = meta["group"]["run_id"]
    client = MlflowClient(uri)
    runs = client.search_runs([meta["group"]["experiment_id"]])
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent]
    assert sorted(r.info.run_name for r in children) == ["trial_0", "trial_1", "trial_2"]
    failed = next(r for r in children if r.info.run_name == "trial_2")
    assert failed.info.status == "FAILED" and failed.data.params["error"] == "CUDA out of memory"
    assert {a.path for a in client.list_artifacts(parent)} == {"correlation_report.md", "paper"}
    assert [a.path for a in client.list_artifacts(parent, "paper")] == ["paper/numbers.tex"]


def test_csv_search_is_a_folder_of_trial_versions_and_the_analysis(run_dir, tmp_path):
    out = _no_warnings(lambda: _search(tmp_path, {"name": "csv", "params": {}}, run_dir))
    folder = out / "csv_logs" / "gradprune-abc"
    assert sorted(p.name for p in folder.iterdir()) == ["analysis", "trial_0", "trial_1", "trial_2"]
    assert (folder / "analysis" / "paper" / "numbers.tex").exists()


def test_logger_section_is_checked_with_the_recipe(tmp_path):
    from gradprune.recipe import load_recipe

    path = Path(__file__).resolve().parents[2] / "recipes" / "tiny.yaml"
    assert load_recipe(path).logger is None  # off by default
    r = load_recipe(path, ["logger.name=csv", "logger.params.save_dir=x"])
    assert r.logger.name == "csv" and r.logger.params == {"save_dir": "x"}
    with pytest.raises(RecipeError, match=r"logger\.name: unknown loggers plugin 'mlfow'.*mlflow"):
        load_recipe(path, ["logger.name=mlfow"])
    with pytest.raises(RecipeError, match=r"logger\.params\.tracking_url: unknown key.*tracking_uri"):
        load_recipe(path, ["logger.name=mlflow", "logger.params.tracking_url=x"])
