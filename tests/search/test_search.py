"""Search: one row per grid point, calibration reuse, failures as rows, resume after SIGKILL, two workers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest

from gradprune.cli import main


def _csv(tmp_path):
    return pd.read_csv(tmp_path / "search" / "search_results.csv")


def test_grid_over_normalizer_and_ratio_calibrates_once(write_search, tmp_path):
    path = write_search({"normalizer.name": ["zscore", "rank"], "pruning.ratio": [0.1, 0.3]})
    assert main(["search", str(path)]) == 0
    df = _csv(tmp_path)
    assert len(df) == 4 and df.success.all()
    assert sorted(zip(df["normalizer.name"], df["pruning.ratio"], strict=True)) == [
        ("rank", 0.1), ("rank", 0.3), ("zscore", 0.1), ("zscore", 0.3)]
    # exactly one calibration pass: one cache entry, the other three trials reused it
    assert len(list((tmp_path / "search/cache/calibration").glob("*/result.json"))) == 1
    assert df.calibration_reused.sum() == 3
    for col in ("taylor_seq_len", "taylor_num_samples", "grad_norm_ratio", "extreme_pruning_layers",
                "pruning_ratio", "config_id", "trial", "time_calibration"):
        assert col in df.columns
    assert (df.pruning_ratio - df["pruning.ratio"]).abs().max() < 0.02
    for t in df.trial:
        assert (tmp_path / f"search/trials/trial_{t}/run.json").exists()
    # rerunning resumes: nothing left to do, the CSV is unchanged
    assert main(["search", str(path)]) == 0
    assert len(_csv(tmp_path)) == 4


def test_failed_trial_is_a_row_and_the_search_goes_on(write_search, tmp_path):
    path = write_search({"pruning.ratio": [0.2, 0.97]})
    assert main(["search", str(path)]) == 0
    df = _csv(tmp_path).sort_values("pruning.ratio")
    assert list(df.success) == [True, False]
    err = df.error.iloc[1]
    assert "removable" in err and "\n" not in err


def test_replicates_share_config_id_and_report_stability(write_search, tmp_path):
    path = write_search({"calibration.seq_len": [8, 16]}, replicates=3)
    assert main(["search", str(path)]) == 0
    df = _csv(tmp_path)
    assert len(df) == 6
    assert sorted(df.seed.unique()) == [0, 1000, 2000]
    assert df.groupby("config_id").seed.nunique().tolist() == [3, 3]
    assert df.groupby("config_id")["calibration.seq_len"].nunique().tolist() == [1, 1]
    assert df.kept_jaccard_mean.between(0, 1).all() and df.score_rank_corr_mean.notna().all()
    assert (df.kept_jaccard_mean < 1).any()  # seeds change the plan


BAD = [
    ({"pruning.ratoi": [0.1]}, {}, "Did you mean 'ratio'"),
    ({"pruning.ratio": []}, {}, "non-empty list"),
    ({"pruning.ratio": ["high"]}, {}, "grid.pruning.ratio value 'high' is not valid"),
    ({"calibration.seed": [1, 2]}, {"replicates": 2}, "either `replicates`"),
    ({"pruning.ratio": [0.1]}, {"samplr": "grid"}, "samplr: unknown key. Did you mean 'sampler'"),
]


@pytest.mark.parametrize("grid,extra,fragment", BAD, ids=[b[2][:20] for b in BAD])
def test_bad_search_input(write_search, tmp_path, capsys, grid, extra, fragment):
    path = write_search(grid, **extra)
    assert main(["search", str(path)]) == 2
    assert fragment in " ".join(capsys.readouterr().err.split())
    assert not (tmp_path / "search").exists()


def test_other_search_in_dir_is_refused_and_storage_errors(write_search, tmp_path, capsys):
    path = write_search({"pruning.ratio": [0.1]})
    assert main(["search", str(path)]) == 0
    before = (tmp_path / "search/search_results.csv").read_text()
    path = write_search({"pruning.ratio": [0.2]})
    assert main(["search", str(path)]) == 2
    assert "holds a different search" in capsys.readouterr().err
    assert (tmp_path / "search/search_results.csv").read_text() == before
    assert main(["search", str(path), "--output_dir", str(tmp_path / "s2"),
                 "--storage", "nosuchdb://user@host/db"]) == 2
    assert "cannot open the Optuna storage" in " ".join(capsys.readouterr().err.split())


def _env():
    return {**os.environ, "PYTHONUNBUFFERED": "1"}


def _running_trial(journal, min_number):
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend
    from optuna.trial import TrialState

    if not journal.exists():
        return False
    storage = JournalStorage(JournalFileBackend(str(journal)))
    for s in storage.get_all_studies():
        for t in storage.get_all_trials(storage.get_study_id_from_name(s.study_name), deepcopy=False):
            if t.state == TrialState.RUNNING and t.number >= min_number and "gradprune_owner" in t.system_attrs:
                return True
    return False


@pytest.mark.slow
def test_sigkill_mid_trial_then_resume_gives_every_point_once(write_search, tmp_path):
    path = write_search({"pruning.ratio": [0.1, 0.2, 0.3, 0.4]})
    cmd = [sys.executable, "-m", "gradprune.cli", "search", str(path)]
    p = subprocess.Popen(cmd, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    journal = tmp_path / "search/study.journal"
    deadline = time.time() + 120
    while not _running_trial(journal, 1) and time.time() < deadline:
        time.sleep(0.1)
    assert p.poll() is None, "search finished before it could be killed"
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    r = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    df = _csv(tmp_path)
    assert sorted(df["pruning.ratio"]) == [0.1, 0.2, 0.3, 0.4]
    assert df.success.all() and not df["pruning.ratio"].duplicated().any()


@pytest.mark.slow
def test_two_workers_complete_every_point_exactly_once(write_search, tmp_path):
    path = write_search({"pruning.ratio": [0.1, 0.2, 0.3], "normalizer.name": ["zscore", "rank"]})
    cmd = [sys.executable, "-m", "gradprune.cli", "search", str(path)]
    ps = [subprocess.Popen(cmd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in ps]
    assert [p.returncode for p in ps] == [0, 0], outs
    df = _csv(tmp_path)
    assert len(df) == 6 and df.success.all()
    assert not df.duplicated(["pruning.ratio", "normalizer.name"]).any()
    ran = [int(o[0].split("this worker ran ")[1].split(" ")[0]) for o in outs]
    assert sum(ran) == 6
    marker = json.loads((tmp_path / "search/search.json").read_text())
    assert marker["fingerprint"]
