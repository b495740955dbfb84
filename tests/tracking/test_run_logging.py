"""End to end: ``gradprune run`` with an MLflow logger on a sqlite store; the run's metrics read back."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_gradprune_run_logs_to_mlflow(tmp_path, monkeypatch):
    pytest.importorskip("mlflow")
    import mlflow

    from gradprune.cli import main

    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'ml.db'}"
    assert main(["run", str(ROOT / "recipes/tiny.yaml"), "eval.limit=20", "logger.name=mlflow",
                 f"logger.params.tracking_uri={uri}", "output.dir=ml"]) == 0
    assert (tmp_path / "ml" / "run.json").exists()
    mlflow.set_tracking_uri(uri)
    runs = mlflow.search_runs(search_all_experiments=True)
    assert len(runs) == 1 and runs["metrics.acc_mean"].iloc[0] > 0 and runs["metrics.ppl"].iloc[0] > 1
    history = mlflow.MlflowClient(uri).get_metric_history(runs["run_id"].iloc[0], "calibration/loss")
    assert len(history) == 8  # 64 windows in micro-batches of 8
