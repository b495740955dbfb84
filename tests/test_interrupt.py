"""Nothing lost: Ctrl-C during ``run`` and ``search``, a crash while results are written, ``--overwrite``.

The Ctrl-C tests run the real CLI in a subprocess and send SIGINT while calibration is inside
Lightning's ``fit`` (which by itself would turn Ctrl-C into ``sys.exit(1)``). They find that moment
through a test estimator, installed for the subprocess as an entry point: a ``*.dist-info`` folder on
PYTHONPATH, which ``importlib.metadata`` reads like any installed distribution. It pauses after each
micro-batch and leaves one marker file per calibration.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from gradprune.cli import main

ROOT = Path(__file__).resolve().parents[1]
TINY = str(ROOT / "recipes/tiny.yaml")

SLOW_PLUGIN = '''
"""Taylor importance that pauses per micro-batch and marks each calibration's first batch."""
import os
import time
from pathlib import Path

from gradprune.importance.taylor import TaylorImportance


class SlowTaylor(TaylorImportance):
    """Taylor, slowed down for the interrupt tests."""

    def setup(self, layers, device=None):
        super().setup(layers, device)
        self._batches = 0

    def end_batch(self):
        super().end_batch()
        if self._batches == 0 and os.environ.get("SLOWPLUG_MARKERS"):
            folder = Path(os.environ["SLOWPLUG_MARKERS"])
            (folder / f"calibration_{len(list(folder.iterdir()))}").touch()
        self._batches += 1
        time.sleep(float(os.environ.get("SLOWPLUG_SLEEP", "0")))
'''


@pytest.fixture
def slow_plugin(tmp_path) -> dict[str, str]:
    """Environment for a subprocess that sees the ``slow_taylor`` estimator (and where its markers go)."""
    site = tmp_path / "site"
    dist = site / "slowplug-0.1.dist-info"
    dist.mkdir(parents=True)
    (site / "slowplug.py").write_text(SLOW_PLUGIN)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: slowplug\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[gradprune.importance]\nslow_taylor = slowplug:SlowTaylor\n")
    markers = tmp_path / "markers"
    markers.mkdir()
    path = os.pathsep.join(p for p in (str(site), str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path, "PYTHONUNBUFFERED": "1", "SLOWPLUG_MARKERS": str(markers),
            "SLOWPLUG_SLEEP": "0.5"}


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 180) -> None:
    deadline = time.time() + timeout
    while not path.exists():
        if proc.poll() is not None:
            raise AssertionError(f"exited ({proc.returncode}) before {path.name}: {proc.communicate()}")
        if time.time() > deadline:
            proc.kill()
            raise AssertionError(f"no {path.name} after {timeout} s")
        time.sleep(0.05)


def _interrupt(proc: subprocess.Popen) -> tuple[int, str]:
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    return proc.returncode, err


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "gradprune.cli", *args]


@pytest.mark.slow
def test_ctrl_c_during_run_exits_130_and_writes_nothing(slow_plugin, recipe_args, tmp_path):
    proc = subprocess.Popen(_cli("run", TINY, *recipe_args, "importance.name=slow_taylor"), env=slow_plugin,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _wait_for(tmp_path / "markers/calibration_0", proc)
    code, err = _interrupt(proc)
    assert code == 130, err
    assert "interrupted" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_ctrl_c_during_search_keeps_finished_rows_and_resumes(slow_plugin, recipe_args, tmp_path):
    overrides = [a for a in recipe_args if not a.startswith("output.")] + ["importance.name=slow_taylor",
                                                                          "calibration.num_samples=8"]
    spec = {"base": TINY, "overrides": overrides, "grid": {"calibration.seq_len": [8, 16, 24]},
            "output_dir": str(tmp_path / "search")}
    recipe = tmp_path / "search.yaml"
    recipe.write_text(yaml.safe_dump(spec))
    proc = subprocess.Popen(_cli("search", str(recipe)), env=slow_plugin, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    _wait_for(tmp_path / "markers/calibration_1", proc)  # trial 0 is done, trial 1 is calibrating
    code, err = _interrupt(proc)
    assert code == 130, err
    assert "Traceback" not in err
    rows = pd.read_csv(tmp_path / "search/search_results.csv")
    assert list(rows.trial) == [0] and rows.success.all()  # the finished trial is kept
    first = (tmp_path / "search/trials/trial_0/run.json").read_bytes()

    statuses = _trial_statuses(tmp_path / "search/study.journal")
    assert statuses[1] == "interrupted"

    resumed = subprocess.run(_cli("search", str(recipe)), env={**slow_plugin, "SLOWPLUG_SLEEP": "0"},
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    rows = pd.read_csv(tmp_path / "search/search_results.csv")
    assert sorted(rows["calibration.seq_len"]) == [8, 16, 24] and rows.success.all()  # every point once
    assert (tmp_path / "search/trials/trial_0/run.json").read_bytes() == first  # not re-run
    assert "this worker ran 2 trial(s)" in " ".join(resumed.stdout.split())


def _trial_statuses(journal: Path) -> dict[int, str]:
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    storage = JournalStorage(JournalFileBackend(str(journal)))
    (study,) = storage.get_all_studies()
    return {t.number: t.user_attrs.get("status", t.state.name.lower())
            for t in storage.get_all_trials(storage.get_study_id_from_name(study.study_name), deepcopy=False)}


@pytest.mark.filterwarnings("ignore:.*configure_optimizers.*returned.*None", "ignore:.*LeafSpec.*:FutureWarning")
def test_ctrl_c_inside_lightning_fit_is_a_keyboard_interrupt():
    """Without ctrl_c_through_lightning, Lightning's fit answers Ctrl-C with SystemExit(1)."""
    import lightning as L
    import torch

    from gradprune.stages import ctrl_c_through_lightning

    if signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        pytest.skip("another SIGINT handler is installed in this process")

    class Interrupts(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.layer = torch.nn.Linear(2, 1)
            self.automatic_optimization = False

        def train_dataloader(self):
            return [torch.zeros(2)] * 3

        def training_step(self, batch, batch_idx):
            signal.raise_signal(signal.SIGINT)  # what Ctrl-C does

        def configure_optimizers(self):
            return None

    trainer = L.Trainer(accelerator="cpu", max_epochs=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)
    with pytest.raises(KeyboardInterrupt), ctrl_c_through_lightning():
        trainer.fit(Interrupts())
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # Ctrl-C still works afterwards


# --------------------------------------------------------------------------------------------------
# a crash while results are written, and --overwrite


def test_crash_while_overwriting_keeps_the_previous_run_whole(recipe_args, tmp_path, monkeypatch):
    import gradprune.record

    assert main(["run", TINY, *recipe_args]) == 0
    out = tmp_path / "out"
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def crash(path, data):
        raise OSError(28, "No space left on device", str(path))

    monkeypatch.setattr(gradprune.record, "atomic_write_bytes", crash)
    assert main(["run", TINY, *recipe_args, "pruning.ratio=0.4", "--overwrite"]) == 1
    # the new files were written aside: the old run stands whole, with nothing of the new one beside it
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    monkeypatch.undo()
    assert main(["run", TINY, *recipe_args]) == 2  # what is left is still guarded


def test_overwrite_drops_the_previous_runs_saved_model(recipe_args, tmp_path):
    assert main(["run", TINY, *recipe_args, "output.save_model=true"]) == 0
    assert (tmp_path / "out/model/plan.json").exists()
    assert main(["run", TINY, *recipe_args, "pruning.ratio=0.3", "--overwrite"]) == 0
    assert not (tmp_path / "out/model").exists()  # it was the other recipe's model
    assert json.loads((tmp_path / "out/run.json").read_text())["recipe"]["pruning"]["ratio"] == 0.3


def test_atomic_write_keeps_the_old_file_when_the_write_fails(tmp_path, monkeypatch):
    from gradprune.files import atomic_write_text

    target = atomic_write_text(tmp_path / "search_results.csv", "old\n")

    def fail(src, dst):
        raise OSError("disk gone")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError, match="disk gone"):
        atomic_write_text(target, "new, longer content\n")
    assert target.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["search_results.csv"]  # no temp file left behind


def test_every_result_writer_is_atomic():
    """Writers of results go through gradprune.files (temp file + rename) or build a temp dir and rename it."""
    import re

    direct = re.compile(r"\.write_text\(|\.write_bytes\(|open\([^)]*['\"][wa]b?['\"]|\.to_csv\([^)]*[\w'\"/]+\.csv|"
                        r"savefig\(\s*(?!buf\b)|save_file\(|torch\.save\(")
    allowed = {
        "gradprune/files.py",  # the atomic writer itself
        "gradprune/pruning/plan.py",  # Plan.save: mkstemp + os.replace
        "gradprune/cut/checkpoint.py",  # writes inside a temp dir, then renames the dir
        "gradprune/recovery/lora.py",  # writes the adapter into the pruned checkpoint's temp dir (save_pruned)
        "gradprune/search/cache.py",  # writes inside a temp dir, then renames the dir
        "gradprune/search/study.py",  # the lock file (no content)
        "gradprune/search/optuna_store.py",  # appends whole journal records under Optuna's journal lock
        "gradprune/eval/tasks.py",  # renders task YAMLs into a private temp dir
        "gradprune/eval/dense_cache.py",  # reads only (writes through gradprune.files)
    }
    found = []
    for path in sorted((ROOT / "gradprune").rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        if rel in allowed or rel.startswith("gradprune/assets/"):  # assets: build-time generators
            continue
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if direct.search(line) and not line.lstrip().startswith("#"):
                found.append(f"{rel}:{n}: {line.strip()}")
    assert found == []
