"""A search never loses or silently redoes work: crashes mid-append, damaged or lost storage, retries,
--overwrite, and the bad inputs that used to run something else than asked."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from gradprune.cli import main
from gradprune.search.trial import TrialOutcome, one_line

ROOT = Path(__file__).resolve().parents[2]
RATIOS = [0.1, 0.2, 0.3]


def _spec(model_dir, corpus_file, out: Path, grid=None, **extra) -> dict:
    return {
        "base": str(ROOT / "recipes/tiny.yaml"),
        "overrides": [f"model.name_or_path={model_dir}", "calibration.dataset.name=text_file",
                      f"calibration.dataset.path={corpus_file}", "calibration.num_samples=8",
                      "calibration.seq_len=16", "calibration.batch_size=4", "eval.run=none",
                      "pruning.attention_layers=[0,4]", "pruning.mlp_layers=[0,4]"],
        "grid": {"pruning.ratio": RATIOS} if grid is None else grid,
        "output_dir": str(out),
        **extra,
    }


@pytest.fixture(scope="module")
def finished(tmp_path_factory, model_dir, corpus_file):
    """A finished 3-point search, run in a subprocess (its trials' owner is a dead PID, as after a crash)."""
    root = tmp_path_factory.mktemp("finished")
    recipe = root / "search.yaml"
    recipe.write_text(yaml.safe_dump(_spec(model_dir, corpus_file, root / "search")))
    r = subprocess.run([sys.executable, "-m", "gradprune.cli", "search", str(recipe)], capture_output=True,
                       text=True, timeout=600, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert r.returncode == 0, r.stderr
    return recipe, root / "search"


@pytest.fixture
def copy_of(finished, tmp_path):
    """A fresh copy of the finished search's output dir; returns (recipe, out)."""
    recipe, out = finished
    dst = tmp_path / "search"
    shutil.copytree(out, dst)
    return recipe, dst


def _fake_trial(recipe, trial_dir, store, console):
    trial_dir.mkdir(parents=True, exist_ok=True)
    (trial_dir / "run.json").write_text("{}\n")
    return TrialOutcome({"acc_mean": 1 - recipe.pruning.ratio}, True, "", 0.0)


@pytest.fixture
def fake_trials(monkeypatch):
    """Trials of the search under test return at once (the storage, not the pruning, is tested here)."""
    monkeypatch.setattr("gradprune.search.worker.run_trial", _fake_trial)


def _search(recipe, out, *args) -> int:
    return main(["search", str(recipe), "--output_dir", str(out), *args])


def _journal_trials(journal: Path):
    """Every trial of the journal's one study; also checks the file is whole records."""
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    data = journal.read_bytes()
    assert data.endswith(b"\n")
    for line in data.splitlines():
        assert "op_code" in json.loads(line)
    storage = JournalStorage(JournalFileBackend(str(journal)))
    (study,) = storage.get_all_studies()
    return storage.get_all_trials(storage.get_study_id_from_name(study.study_name))


def _assert_every_point_once(out: Path) -> None:
    from optuna.trial import TrialState

    df = pd.read_csv(out / "search_results.csv")
    assert sorted(df["pruning.ratio"]) == RATIOS and df.success.all(), df
    done = [t.params["pruning.ratio"] for t in _journal_trials(out / "study.journal")
            if t.state == TrialState.COMPLETE and not t.user_attrs.get("retried")]
    assert sorted(done) == RATIOS


def _snapshot(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


# -- 1. crash-safe storage ----------------------------------------------------------------------


def test_journal_cut_at_every_byte_of_its_last_record_resumes_every_point_once(finished, tmp_path, fake_trials):
    recipe, out = finished
    data = (out / "study.journal").read_bytes()
    start = data.rstrip(b"\n").rfind(b"\n") + 1  # the last record: data[start:], ending in "\n"
    assert len(data) - start > 20
    for cut in range(start, len(data)):
        work = tmp_path / f"cut_{cut}"
        shutil.copytree(out, work)
        (work / "study.journal").write_bytes(data[:cut])
        assert _search(recipe, work) == 0, cut
        _assert_every_point_once(work)
        shutil.rmtree(work)


def test_a_finished_search_resumes_to_nothing(copy_of, fake_trials, capsys):
    recipe, out = copy_of
    before = pd.read_csv(out / "search_results.csv")
    assert _search(recipe, out) == 0
    assert "ran 0 trial(s)" in capsys.readouterr().out
    pd.testing.assert_frame_equal(pd.read_csv(out / "search_results.csv"), before)
    _assert_every_point_once(out)


@pytest.mark.parametrize("fault", ["deleted", "emptied"])
def test_lost_journal_is_refused_not_a_silent_restart(copy_of, capsys, fault):
    recipe, out = copy_of
    journal = out / "study.journal"
    journal.unlink() if fault == "deleted" else journal.write_bytes(b"")
    before = _snapshot(out)
    assert _search(recipe, out) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "holds results of 3 trial(s)" in err and "study.journal" in err and "--overwrite" in err
    assert ("is missing" if fault == "deleted" else "is empty") in err
    assert _snapshot(out) == before  # no new journal, the CSV and trial folders untouched


def test_journal_replaced_by_an_older_copy_is_refused(copy_of, capsys):
    recipe, out = copy_of
    journal = out / "study.journal"
    lines = journal.read_bytes().splitlines(keepends=True)
    # keep the study and its enqueued points only: the trials' results are lost
    keep = [ln for ln in lines if json.loads(ln)["op_code"] in (0, 4)]
    journal.write_bytes(b"".join(keep))
    assert _search(recipe, out) == 2
    assert "does not hold them" in capsys.readouterr().err


DAMAGE = [
    ("garbage-line", lambda d: d.replace(b"\n", b"\nthis is no record\n", 1), "line 2 is not a JSON record"),
    ("garbage-bytes", lambda d: d.replace(b"\n", b"\n\xff\xfe\x00\x81\n", 1), "line 2 is bytes that are not UTF-8"),
    ("garbage-tail", lambda d: d + b"\xff\xfe\x00\x81", "bytes that are not a journal record"),
    ("not-a-record", lambda d: d.replace(b"\n", b"\n[1, 2]\n", 1), "not an Optuna journal record"),
    ("deep-line", lambda d: d.replace(b"\n", b"\n" + b"[" * 100000 + b"]" * 100000 + b"\n", 1), "line 2 is not a"),
    ("unknown-op", lambda d: d + b'{"op_code": 99, "worker_id": "w"}\n', "Optuna cannot replay it"),
]


@pytest.mark.parametrize("damage,fragment", [(d[1], d[2]) for d in DAMAGE], ids=[d[0] for d in DAMAGE])
def test_damaged_journal_is_exit_2_naming_file_line_and_fix(copy_of, capsys, damage, fragment):
    recipe, out = copy_of
    journal = out / "study.journal"
    journal.write_bytes(damage(journal.read_bytes()))
    before = _snapshot(out)
    assert _search(recipe, out) == 2
    err = capsys.readouterr().err
    flat = " ".join(err.split())
    assert "study.journal" in flat and "is damaged" in flat and fragment in flat and "--overwrite" in flat
    assert len(err.strip().splitlines()) == 1 or "Traceback" not in err
    assert _snapshot(out) == before


@pytest.mark.parametrize("content", [b"{not json", b"\xff\xfe", b"[1, 2]\n", b'{"fingerprint": 3}'])
def test_damaged_search_json_is_exit_2(copy_of, capsys, content):
    recipe, out = copy_of
    (out / "search.json").write_bytes(content)
    before = _snapshot(out)
    assert _search(recipe, out) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "search.json is damaged" in err and "--overwrite" in err and "Traceback" not in err
    assert _snapshot(out) == before


def test_overwrite_starts_a_damaged_search_over(copy_of, fake_trials):
    recipe, out = copy_of
    (out / "study.journal").write_bytes(b"garbage\n")
    assert _search(recipe, out, "--overwrite") == 0
    _assert_every_point_once(out)
    assert sorted(pd.read_csv(out / "search_results.csv").trial) == [0, 1, 2]


# -- 2. --retry-failed ------------------------------------------------------------------------------


@pytest.fixture
def flaky_trials(monkeypatch):
    """Trials that fail at pruning.ratio 0.2 while ``broken`` holds it (a cause the user then fixes)."""
    broken = {0.2}

    def trial(recipe, trial_dir, store, console):
        if recipe.pruning.ratio in broken:
            return TrialOutcome({}, False, "CUDA out of memory", 0.0)
        return _fake_trial(recipe, trial_dir, store, console)

    monkeypatch.setattr("gradprune.search.worker.run_trial", trial)
    return broken


def test_retry_failed_reruns_only_the_failed_point_and_keeps_one_row_per_point(
        model_dir, corpus_file, tmp_path, flaky_trials, capsys):
    recipe = tmp_path / "s.yaml"
    out = tmp_path / "search"
    recipe.write_text(yaml.safe_dump(_spec(model_dir, corpus_file, out)))
    assert _search(recipe, out) == 0
    df = pd.read_csv(out / "search_results.csv").set_index("pruning.ratio")
    assert list(df.success) == [True, False, True]
    assert list(df.evaluated) == [True, False, True]  # a failed row measured nothing
    assert list(df.attempts) == [1, 1, 1]
    capsys.readouterr()
    assert _search(recipe, out) == 0  # a plain resume does not retry
    assert "ran 0 trial(s)" in capsys.readouterr().out
    flaky_trials.clear()  # the cause is fixed
    assert _search(recipe, out, "--retry-failed") == 0
    text = capsys.readouterr().out
    assert "1 point(s) whose latest attempt failed" in text and "ran 1 trial(s)" in text
    df = pd.read_csv(out / "search_results.csv").set_index("pruning.ratio")
    assert sorted(df.index) == RATIOS and df.success.all() and df.evaluated.all()
    assert df.attempts.to_dict() == {0.1: 1, 0.2: 2, 0.3: 1}
    assert df.trial.to_dict() == {0.1: 0, 0.2: 3, 0.3: 2}  # finished rows kept, not re-run
    assert _search(recipe, out, "--retry-failed") == 0  # nothing failed any more: nothing to do
    assert "0 point(s)" in capsys.readouterr().out


def test_retry_failed_reruns_an_interrupted_point_whose_requeue_was_lost(copy_of, fake_trials, capsys):
    """A kill between marking a trial interrupted and enqueueing it again leaves its point without a
    waiting trial: --retry-failed runs it."""
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend
    from optuna.trial import TrialState

    recipe, out = copy_of
    journal = out / "study.journal"
    lines = journal.read_bytes().splitlines(keepends=True)
    last = json.loads(lines[-1])
    assert last["op_code"] == 6 and last["state"] == TrialState.COMPLETE.value
    marks = [{**last, "op_code": 8, "user_attr": {k: v}} for k, v in (("status", "interrupted"), ("retried", True))]
    for m in marks:
        for k in ("state", "values", "datetime_complete"):
            m.pop(k)
    last.update(state=TrialState.FAIL.value, values=None)
    journal.write_bytes(b"".join(lines[:-1]) + b"".join(json.dumps(r).encode() + b"\n" for r in [*marks, last]))
    storage = JournalStorage(JournalFileBackend(str(journal)))
    (study,) = storage.get_all_studies()
    (t,) = [t for t in storage.get_all_trials(storage.get_study_id_from_name(study.study_name)) if t.user_attrs.get("retried")]
    assert t.state == TrialState.FAIL and t.user_attrs["status"] == "interrupted"
    assert _search(recipe, out) == 0
    assert "ran 0 trial(s)" in capsys.readouterr().out
    assert _search(recipe, out, "--retry-failed") == 0
    assert "ran 1 trial(s)" in capsys.readouterr().out
    _assert_every_point_once(out)
    assert pd.read_csv(out / "search_results.csv").attempts.max() == 2


def test_retry_failed_is_refused_where_points_are_decided_together(write_search, tmp_path, capsys):
    path = write_search({"pruning.ratio": [0.1, 0.2]}, evaluation="halving", extra_overrides=("eval.run=zeroshot",))
    assert main(["search", str(path), "--retry-failed"]) == 2
    assert "--retry-failed works with evaluation: full" in " ".join(capsys.readouterr().err.split())
    assert not (tmp_path / "search").exists()


# -- 3. --overwrite and temp files ------------------------------------------------------------------


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_overwrite_removes_the_previous_search_and_its_analysis_and_nothing_else(copy_of, fake_trials):
    from gradprune.analysis.command import OUTPUTS

    recipe, out = copy_of
    for name in OUTPUTS:  # what `gradprune analyze` wrote beside the CSV
        (out / name).write_text("old analysis\n")
    (out / "halving_decisions.json").write_text("{}\n")
    (out / ".search_results.csv.otherhost.1.abc.tmp").write_text("a killed write\n")
    (out / "notes.txt").write_text("the user's own file\n")
    (out / "mine").mkdir()
    (out / "mine" / "plot.png").write_bytes(b"png")
    other = recipe.parent / "other.yaml"
    spec = yaml.safe_load(recipe.read_text())
    spec["grid"] = {"pruning.ratio": [0.15]}
    other.write_text(yaml.safe_dump(spec))
    assert _search(other, out) == 2  # another search: refused without --overwrite
    assert _search(other, out, "--overwrite") == 0
    left = sorted(str(p.relative_to(out)) for p in out.rglob("*") if "cache" not in p.parts)
    assert left == [".search.lock", "mine", "mine/plot.png", "notes.txt", "search.json", "search_results.csv",
                    "study.journal", "trials", "trials/trial_0", "trials/trial_0/run.json"]
    assert (out / "notes.txt").read_text() == "the user's own file\n"
    assert pd.read_csv(out / "search_results.csv")["pruning.ratio"].tolist() == [0.15]


def test_temp_files_of_killed_writes_are_removed_on_the_next_start(copy_of, fake_trials):
    import socket

    recipe, out = copy_of
    host, dead, me = socket.gethostname(), _dead_pid(), os.getpid()
    killed = out / f".search_results.csv.{host}.{dead}.k1ll3d.tmp"
    live = out / f".search_results.csv.{host}.{me}.l1v3.tmp"  # a write in progress (this process)
    old_other_host = out / ".search.json.elsewhere.7.x.tmp"
    new_other_host = out / ".search.json.elsewhere.8.y.tmp"
    entry = out / "cache" / "calibration" / f".entry.{host}.{dead}.e.tmp"
    entry.mkdir(parents=True)
    (entry / "scores.safetensors").write_bytes(b"half")
    users = out / ".my.tmp"  # not a name the search writes
    for p in (killed, live, old_other_host, new_other_host, users):
        p.write_text("x")
    os.utime(old_other_host, (1, 1))
    assert _search(recipe, out) == 0
    assert not killed.exists() and not entry.exists() and not old_other_host.exists()
    assert live.exists() and new_other_host.exists() and users.exists()


def test_atomic_writes_name_their_writer(tmp_path):
    import socket

    from gradprune.files import abandoned_temp, atomic_write_text, temp_prefix

    assert temp_prefix("a.csv") == f".a.csv.{socket.gethostname()}.{os.getpid()}."
    assert not abandoned_temp(tmp_path / f".a.csv.{socket.gethostname()}.{os.getpid()}.r.tmp")
    assert abandoned_temp(tmp_path / f".a.csv.{socket.gethostname()}.{_dead_pid()}.r.tmp")
    atomic_write_text(tmp_path / "a.csv", "x\n")
    assert [p.name for p in tmp_path.iterdir()] == ["a.csv"]


# -- 4. bad inputs that used to run something else than asked ---------------------------------------


@pytest.fixture
def base_spec(model_dir, corpus_file, tmp_path):
    """A valid search recipe as a dict (written by the case); its output dir does not exist yet."""
    return _spec(model_dir, corpus_file, tmp_path / "search")


def _write(tmp_path, spec: dict | str, name: str = "s.yaml") -> Path:
    p = tmp_path / name
    p.write_text(spec if isinstance(spec, str) else yaml.safe_dump(spec))
    return p


def _dup_key_recipe(tmp_path, spec):
    text = yaml.safe_dump(spec)
    return _write(tmp_path, text + "replicates: 1\nreplicates: 2\n")


TINY_LINES = len((ROOT / "recipes/tiny.yaml").read_text().splitlines())
TINY_OUTPUT_LINE = 1 + next(i for i, line in enumerate((ROOT / "recipes/tiny.yaml").read_text().splitlines())
                            if line.startswith("output:"))


def _dup_key_base(tmp_path, spec):
    base = tmp_path / "base.yaml"
    base.write_text((ROOT / "recipes/tiny.yaml").read_text() + "output: {dir: a}\n")
    return _write(tmp_path, {**spec, "base": str(base)})


def _deep(tmp_path, spec):
    return _write(tmp_path, yaml.safe_dump(spec) + "study_name: " + "[" * 5000 + "]" * 5000 + "\n")


SEARCH_BAD = [
    ("grid-empty", lambda t, s: _write(t, {**s, "grid": {}}), ("grid is empty", "at least one recipe key")),
    ("grid-missing", lambda t, s: _write(t, {k: v for k, v in s.items() if k != "grid"}),
     ("grid is missing", "gradprune run")),
    ("objective-unknown", lambda t, s: _write(t, {**s, "objective": "acc_nonexistent"}),
     ("objective 'acc_nonexistent' is not a metric", "acc_mean", "ppl", "Expected one of")),
    ("objective-typo", lambda t, s: _write(t, {**s, "objective": "acc_maen"}), ("Did you mean 'acc_mean'",)),
    ("objective-lower-is-better-tpe", lambda t, s: _write(t, {**s, "objective": "ppl", "sampler": "tpe",
                                                              "n_trials": 2}),
     ("objective 'ppl' is better when lower", "maximizes")),
    ("duplicate-key", _dup_key_recipe, ("s.yaml", "line", "key 'replicates' appears twice")),
    ("duplicate-key-in-base", _dup_key_base, ("base.yaml", f"line {TINY_LINES + 1}:", "key 'output' appears twice",
                                             f"first on line {TINY_OUTPUT_LINE})")),
    ("nested-5000-deep", _deep, ("s.yaml", "nested deeper than 100 levels")),
    ("eval-batch-size-0", lambda t, s: _write(t, {**s, "overrides": [*s["overrides"], "eval.batch_size=0"]}),
     ("eval.batch_size", "integer >= 1 or 'auto'")),
]


@pytest.mark.parametrize("build,fragments", [(b[1], b[2]) for b in SEARCH_BAD], ids=[b[0] for b in SEARCH_BAD])
@pytest.mark.parametrize("command", ["search", "validate"])
def test_bad_search_input_is_one_line_exit_2_and_nothing_written(tmp_path, base_spec, capsys, build, fragments,
                                                                  command):
    path = build(tmp_path, base_spec)
    n_errors = 1
    if command == "validate" and "grid is missing" in fragments:
        # validate tells a search recipe by its grid: without one it reads it as a run recipe, whose every
        # problem is listed (base, output_dir, overrides: unknown keys), one line each
        fragments, n_errors = ("s.yaml", "base: unknown key", "overrides: unknown key"), 3
    before = sorted(tmp_path.rglob("*"))
    assert main([command, str(path)]) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == n_errors and all(line.startswith("error: ") for line in lines), err
    flat = " ".join(err.split())
    for fragment in fragments:
        assert fragment in flat, flat
    assert sorted(tmp_path.rglob("*")) == before  # validate and search agree; nothing written


@pytest.fixture
def read_only(monkeypatch):
    """Make a folder read-only; as root (who may write anyway) its writes fail as they would there."""
    import tempfile

    def make(folder: Path) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        folder.chmod(0o555)
        if os.access(folder, os.W_OK):
            real = tempfile.mkstemp

            def mkstemp(*args, dir=None, **kw):
                if dir is not None and Path(dir).resolve() == folder.resolve():
                    raise PermissionError(13, "Permission denied")
                return real(*args, dir=dir, **kw)

            monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
        return folder

    yield make


def test_search_into_a_read_only_dir_is_exit_2_before_any_work(tmp_path, base_spec, read_only, capsys):
    out = read_only(tmp_path / "ro")
    path = _write(tmp_path, base_spec)
    assert main(["search", str(path), "--output_dir", str(out)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "output_dir" in err and "not writable" in err
    assert list(out.iterdir()) == []


def test_search_into_a_read_only_dir_with_a_finished_search_is_exit_2(copy_of, read_only, capsys):
    recipe, out = copy_of
    before = _snapshot(out)
    read_only(out)
    assert _search(recipe, out) == 2
    assert "not writable" in capsys.readouterr().err
    assert _snapshot(out) == before


def _planted(n: int = 12) -> pd.DataFrame:
    import numpy as np

    rng = np.random.default_rng(0)
    g = rng.uniform(2, 40, n)
    return pd.DataFrame({"trial": range(n), "success": True, "grad_norm_ratio": g,
                         "grad_max_ratio": rng.uniform(1, 9, n), "acc_mean": 0.7 - 0.004 * g + rng.normal(0, 0.005, n)})


@pytest.fixture(scope="module")
def analysis(tmp_path_factory):
    """A search CSV and the prediction_model.json that `gradprune analyze` writes from it."""
    d = tmp_path_factory.mktemp("analysis")
    _planted().to_csv(d / "search_results.csv", index=False)
    assert main(["analyze", str(d / "search_results.csv"), "--output_dir", str(d / "out")]) == 0
    return d / "search_results.csv", d / "out/prediction_model.json"


def test_analyze_into_a_read_only_dir_is_exit_2(analysis, tmp_path, read_only, capsys):
    csv, _ = analysis
    out = read_only(tmp_path / "ro")
    assert main(["analyze", str(csv), "--output_dir", str(out)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "--output_dir" in err and "not writable" in err
    assert list(out.iterdir()) == []


@pytest.mark.parametrize("where", ["missing", "a-file", "read-only"])
def test_predict_output_into_a_missing_or_unwritable_dir_is_exit_2(analysis, tmp_path, read_only, capsys, where):
    csv, model = analysis
    if where == "missing":
        target, fragment = tmp_path / "nope" / "p.csv", "does not exist"
    elif where == "a-file":
        (tmp_path / "f").write_text("x")
        target, fragment = tmp_path / "f" / "p.csv", "is a file"
    else:
        target, fragment = read_only(tmp_path / "ro") / "p.csv", "not writable"
    before = sorted(tmp_path.rglob("*"))
    assert main(["predict", str(model), str(csv), "--output", str(target)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "--output" in err and fragment in err, err
    assert sorted(tmp_path.rglob("*")) == before


def test_a_worker_killed_mid_append_does_not_break_the_journal_for_the_others(tmp_path):
    """Worker A dies in the middle of a record while worker B goes on: B's next append starts a line of
    its own (Optuna's would continue A's line and merge the two records)."""
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    from gradprune.search.study import open_storage

    storage = open_storage(None, tmp_path)
    study = optuna.create_study(study_name="s", storage=storage)
    study.enqueue_trial({"x": 1})
    journal = tmp_path / "study.journal"
    with open(journal, "ab") as fh:  # what A had written when it was killed
        fh.write(b'{"op_code":4,"worker_id":"a","study_id":0,"datetime_sta')
    study.enqueue_trial({"x": 2})
    study.enqueue_trial({"x": 3})
    for line in journal.read_bytes().splitlines():
        json.loads(line)
    reread = JournalStorage(JournalFileBackend(str(journal)))
    (s,) = reread.get_all_studies()
    assert [t.system_attrs["fixed_params"] for t in reread.get_all_trials(reread.get_study_id_from_name(s.study_name))] == [
        {"x": 1}, {"x": 2}, {"x": 3}]


# -- 4. two searches at once, columns added by hand, error text with [brackets] -------------------------


def test_a_second_search_that_claims_the_same_new_folder_at_once_is_refused(model_dir, corpus_file, tmp_path,
                                                                             fake_trials, monkeypatch, capsys):
    """B passed its output-dir check while the folder was still new; A claims it before B does (as when both
    are started together): B is refused, A's claim untouched, B leaves nothing behind."""
    import gradprune.search.command as command
    from gradprune.search.spec import load_search_spec

    out = tmp_path / "race"
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    a.write_text(yaml.safe_dump(_spec(model_dir, corpus_file, out, grid={"pruning.ratio": [0.1]})))
    b.write_text(yaml.safe_dump(_spec(model_dir, corpus_file, out, grid={"pruning.ratio": [0.2]})))
    real = command.preflight_search

    def a_claims_meanwhile(spec, where, **checks):  # runs after B's checks of the folder, before its claim
        report = real(spec, where, **checks)
        out.mkdir()
        command.claim_dir(out, load_search_spec(a), a)
        return report

    monkeypatch.setattr(command, "preflight_search", a_claims_meanwhile)
    assert _search(b, out) == 2
    err = capsys.readouterr().err
    assert "was claimed by a different search" in err and "Traceback" not in err
    claimed = json.loads((out / "search.json").read_text())
    assert claimed["fingerprint"] == load_search_spec(a).fingerprint() and claimed["source"] == str(a)
    assert sorted(p.name for p in out.iterdir()) == ["search.json"]  # B wrote nothing: no journal, no trial
    monkeypatch.setattr(command, "preflight_search", real)
    assert _search(a, out) == 0  # A goes on in its folder
    assert pd.read_csv(out / "search_results.csv")["pruning.ratio"].tolist() == [0.1]


def test_a_worker_of_the_same_search_joins_a_claimed_folder(model_dir, corpus_file, tmp_path):
    from gradprune.search.command import claim_dir
    from gradprune.search.spec import load_search_spec

    recipe = tmp_path / "s.yaml"
    recipe.write_text(yaml.safe_dump(_spec(model_dir, corpus_file, tmp_path / "out")))
    spec = load_search_spec(recipe)
    (tmp_path / "out").mkdir()
    claim_dir(tmp_path / "out", spec, recipe)
    first = (tmp_path / "out/search.json").read_bytes()
    claim_dir(tmp_path / "out", spec, recipe)  # the second worker: no error, the claim unchanged
    assert (tmp_path / "out/search.json").read_bytes() == first
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["search.json"]


def test_a_column_added_by_hand_survives_the_next_search_run(copy_of, fake_trials):
    recipe, out = copy_of
    df = pd.read_csv(out / "search_results.csv")
    df["my_note"] = [f"looked at {t}" for t in df.trial]
    df.to_csv(out / "search_results.csv", index=False)
    assert _search(recipe, out) == 0  # resumes (nothing left to run) and rewrites the CSV from the study
    after = pd.read_csv(out / "search_results.csv")
    assert after.columns[-1] == "my_note"
    assert dict(zip(after.trial, after.my_note, strict=True)) == {t: f"looked at {t}" for t in df.trial}
    # a trial that runs after the edit gets an empty cell, the others keep theirs
    from gradprune.search.table import keep_added_columns

    rows = [{"trial": t} for t in [*df.trial, 99]]
    keep_added_columns(rows, out / "search_results.csv")
    assert [r["my_note"] for r in rows] == [*(f"looked at {t}" for t in df.trial), ""]


def test_a_csv_whose_trial_column_was_removed_is_not_rewritten(copy_of, fake_trials, capsys):
    recipe, out = copy_of
    df = pd.read_csv(out / "search_results.csv").drop(columns="trial").assign(my_note="x")
    df.to_csv(out / "search_results.csv", index=False)
    before = _snapshot(out)
    assert _search(recipe, out) == 2
    err = capsys.readouterr().err
    assert "search_results.csv: has no 'trial' column" in err and "my_note" in err
    assert _snapshot(out) == before


def _failing_with_brackets(recipe, trial_dir, store, console):
    return TrialOutcome({}, False, one_line(RuntimeError("[/x] boom")), 0.1)


def test_a_trial_error_with_markup_brackets_does_not_kill_the_worker(model_dir, corpus_file, tmp_path, monkeypatch,
                                                                      capsys):
    """The plain-log display (no terminal: a log file, CI, nohup) prints the error as written."""
    monkeypatch.setattr("gradprune.search.worker.run_trial", _failing_with_brackets)
    recipe = tmp_path / "s.yaml"
    recipe.write_text(yaml.safe_dump(_spec(model_dir, corpus_file, tmp_path / "out", grid={"pruning.ratio": [0.1, 0.2]})))
    assert _search(recipe, tmp_path / "out") == 0
    out = capsys.readouterr().out
    assert out.count("error: RuntimeError: [/x] boom") == 2
    df = pd.read_csv(tmp_path / "out/search_results.csv")
    assert len(df) == 2 and (df.error == "RuntimeError: [/x] boom").all()
