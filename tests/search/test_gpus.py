"""``search --gpus``: one worker process per GPU on one study; a multi-device trial is refused in a search."""

from __future__ import annotations

import pandas as pd
import pytest

import gradprune.search.gpus as gpus
from gradprune.cli import main
from gradprune.errors import GradpruneError


def test_a_multi_device_trial_is_refused_with_the_gpus_alternative(write_search, tmp_path, capsys):
    path = write_search({"pruning.ratio": [0.1, 0.2]}, extra_overrides=("trainer.devices=2",))
    assert main(["search", str(path)]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "trainer.devices=2 inside a search" in err and "gradprune search RECIPE --gpus all" in err
    assert "Traceback" not in err and not (tmp_path / "search").exists()


def test_gpus_names_the_devices_it_can_use(monkeypatch):
    assert gpus.parse_gpus("all", ["3", "5"]) == ["3", "5"]
    assert gpus.parse_gpus("1", ["3", "5"]) == ["5"]  # an index into this process's own visible GPUs
    for text, fragment in (("2", "no GPU 2"), ("0,0", "an index repeats"), ("x", "expected 'all' or GPU indices")):
        with pytest.raises(GradpruneError, match=fragment):
            gpus.parse_gpus(text, ["3", "5"])
    with pytest.raises(GradpruneError, match="no CUDA GPU is visible"):
        gpus.parse_gpus("all", [])
    # the worker command: this command line without --gpus (and what was done once), the output dir fixed
    argv = ["search", "s.yaml", "pruning.ratio=0.1", "--gpus", "all", "--overwrite", "--output_dir", "o"]
    assert gpus.worker_command(argv)[-3:] == ["search", "s.yaml", "pruning.ratio=0.1"]


# the columns a worker's timing or scheduling decides
_UNSTABLE = ("trial", "duration_s", "calibration_reused", "attempts", "seed_index")


@pytest.mark.slow
def test_two_gpu_workers_share_the_study_and_write_a_single_workers_table(write_search, tmp_path, monkeypatch):
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    grid = {"pruning.ratio": [0.1, 0.2, 0.3], "normalizer.name": ["zscore", "rank"]}
    path = write_search(grid)
    monkeypatch.setattr(gpus, "visible_gpus", lambda: ["0", "1"])  # two nominal devices (CPU trials)
    assert main(["search", str(path), "--gpus", "all"]) == 0
    out = tmp_path / "search"
    logs = {g: (out / f"workers/gpu{g}.log").read_text() for g in ("0", "1")}
    ran = [int(text.split("this worker ran ")[1].split(" ")[0]) for text in logs.values()]
    storage = JournalStorage(JournalFileBackend(str(out / "study.journal")))
    trials = storage.get_all_trials(storage.get_study_id_from_name(storage.get_all_studies()[0].study_name))
    owners = [t.system_attrs["gradprune_owner"]["pid"] for t in trials]
    assert len(trials) == 6 == sum(ran) and len(set(owners)) <= 2  # every point once, by one of the two workers
    multi = pd.read_csv(out / "search_results.csv")
    assert main(["search", str(path), "--output_dir", str(tmp_path / "single")]) == 0
    single = pd.read_csv(tmp_path / "single/search_results.csv")
    keys = list(grid)
    stable = [c for c in single.columns
              if not any(t in c for t in ("time", "seconds", "per_s")) and c not in _UNSTABLE]
    assert set(stable) <= set(multi.columns) and multi.success.all()
    a = multi[stable].sort_values(keys).reset_index(drop=True)
    b = single[stable].sort_values(keys).reset_index(drop=True)
    pd.testing.assert_frame_equal(a, b, check_exact=False, rtol=1e-6)
