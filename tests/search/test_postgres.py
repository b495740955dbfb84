"""A search on a real PostgreSQL storage: two workers, one SIGKILLed mid-trial, every point exactly once.

Needs the PostgreSQL server binaries (Debian's ``postgresql``; .ci/run installs it) and the driver
(``pip install gradprune[postgres]``); skipped where either is missing. The server runs on a throwaway
data dir and a free local port, and is stopped at the end.
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
RATIOS = [0.1, 0.2, 0.3, 0.4]


def _pg_bin(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    versions = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return versions[-1] if versions else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def postgres_url():
    """A PostgreSQL server on a throwaway data dir; yields the URL of an empty database."""
    pytest.importorskip("psycopg2")
    initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
    if initdb is None or pg_ctl is None:
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) not installed")
    as_user: list[str] = []
    root = Path(tempfile.mkdtemp(prefix="gradprune-pg-"))
    if os.geteuid() == 0:  # the server refuses to run as root: run it as the postgres account
        if shutil.which("runuser") is None:
            pytest.skip("running as root without runuser")
        try:
            shutil.chown(root, "postgres")
        except (LookupError, PermissionError):
            pytest.skip("running as root and there is no postgres account")
        as_user = ["runuser", "-u", "postgres", "--"]
    data, port = root / "data", _free_port()
    subprocess.run([*as_user, initdb, "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8"],
                   check=True, capture_output=True, timeout=120)
    subprocess.run([*as_user, pg_ctl, "-D", str(data), "-l", str(root / "log"), "-w", "-t", "60", "-o",
                    f"-p {port} -k {root} -c listen_addresses=127.0.0.1", "start"],
                   check=True, capture_output=True, timeout=120)
    try:
        import psycopg2

        conn = psycopg2.connect(host="127.0.0.1", port=port, user="postgres", dbname="postgres")
        conn.autocommit = True
        conn.cursor().execute("CREATE DATABASE gradprune")
        conn.close()
        yield f"postgresql+psycopg2://postgres@127.0.0.1:{port}/gradprune"
    finally:
        subprocess.run([*as_user, pg_ctl, "-D", str(data), "-m", "immediate", "stop"], capture_output=True,
                       timeout=120)
        shutil.rmtree(root, ignore_errors=True)


def _running_pids(url: str) -> set[int]:
    """PIDs of the workers that own a RUNNING trial."""
    import optuna
    from optuna.trial import TrialState

    storage = optuna.storages.RDBStorage(url)
    pids = set()
    for s in storage.get_all_studies():
        for t in storage.get_all_trials(storage.get_study_id_from_name(s.study_name), deepcopy=False,
                                         states=(TrialState.RUNNING,)):
            owner = t.system_attrs.get("gradprune_owner")
            if owner:
                pids.add(owner["pid"])
    return pids


def test_two_workers_on_postgres_one_killed_every_point_once(postgres_url, model_dir, corpus_file, tmp_path):
    import optuna
    from optuna.trial import TrialState

    out = tmp_path / "search"
    spec = {
        "base": str(ROOT / "recipes/tiny.yaml"),
        "overrides": [f"model.name_or_path={model_dir}", "calibration.dataset.name=text_file",
                      f"calibration.dataset.path={corpus_file}", "calibration.num_samples=8",
                      "calibration.seq_len=16", "calibration.batch_size=4", "eval.run=none",
                      "pruning.attention_layers=[0,4]", "pruning.mlp_layers=[0,4]"],
        "grid": {"pruning.ratio": RATIOS},
        "output_dir": str(out),
    }
    recipe = tmp_path / "s.yaml"
    recipe.write_text(yaml.safe_dump(spec))
    cmd = [sys.executable, "-m", "gradprune.cli", "search", str(recipe), "--storage", postgres_url]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    a = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while a.pid not in _running_pids(postgres_url) and time.time() < deadline and a.poll() is None:
        time.sleep(0.1)
    b = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert a.poll() is None, "worker A finished before it could be killed"
    os.kill(a.pid, signal.SIGKILL)
    a.wait()
    b_out, b_err = b.communicate(timeout=600)
    assert b.returncode == 0, b_err
    # a worker started after both recovers whatever B did not (A's trial, if B had finished first)
    c = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert c.returncode == 0, c.stderr
    df = pd.read_csv(out / "search_results.csv")
    assert sorted(df["pruning.ratio"]) == RATIOS and df.success.all()
    storage = optuna.storages.RDBStorage(postgres_url)
    (study,) = storage.get_all_studies()
    trials = storage.get_all_trials(storage.get_study_id_from_name(study.study_name))
    done = sorted(t.params["pruning.ratio"] for t in trials
                  if t.state == TrialState.COMPLETE and not t.user_attrs.get("retried"))
    assert done == RATIOS  # every point exactly once
    stale = [t for t in trials if t.user_attrs.get("status") == "stale"]
    assert len(stale) == 1 and stale[0].system_attrs["gradprune_owner"]["pid"] == a.pid
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
