"""DDP calibration on 2 CPU processes (gloo) equals a single-process run.

The test runs this file as a script in a subprocess (never pytest inside pytest):

* ``popen``: one process calls ``calibrate`` with ``trainer.strategy: ddp, devices: 2``; Lightning's
  launcher re-runs the script for rank 1, as it does for ``gradprune run``;
* ``torchrun``: the test starts both ranks itself with the variables torchrun sets (``RANK``,
  ``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``, ...), as a cluster launcher would.

Each rank saves its results; the test compares both with ``calibrate`` on one process.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
ESTIMATORS = {
    "taylor": ("taylor", {}),
    "fisher": ("fisher", {}),
    "fisher_ps": ("fisher", {"per_sample": True}),
    "taylor_mix": ("taylor_mix", {}),
    "activation": ("activation", {}),
}
COLLECTORS = ("grad_norm", "grad_mean", "grad_std", "grad_max")
N_BATCHES, BATCH = 5, 2  # odd: rank 0 gets 3 micro-batches, rank 1 gets 2


def _inputs():
    from tests.conftest import make_model

    model = make_model("mistral", seed=0)
    ids = torch.randint(0, 300, (N_BATCHES * BATCH, 12), generator=torch.Generator().manual_seed(7))
    return model, ids


def _calibrate(devices: int, strategy: str, console=None):
    from gradprune import plugins
    from gradprune.calibration import calibrate
    from gradprune.models.adapters import get_adapter
    from gradprune.progress import CalibrationProgress
    from gradprune.recipe import TrainerSection

    model, ids = _inputs()
    ests = {k: plugins.IMPORTANCE.build(n, p) for k, (n, p) in ESTIMATORS.items()}
    cols = [plugins.COLLECTORS.build(c) for c in COLLECTORS]
    progress = CalibrationProgress(console, N_BATCHES, BATCH * ids.shape[1]) if console is not None else None
    cfg = TrainerSection(accelerator="cpu", devices=devices, strategy=strategy, precision="32-true")
    return calibrate(model, get_adapter(model).layers(model), ids, BATCH, ests, cols, cfg, progress=progress)


def _worker(out_dir: str) -> None:
    """One rank (popen: the first process, which launches rank 1 from inside ``fit``)."""
    import io

    from rich.console import Console

    buf = io.StringIO()
    res = _calibrate(devices=2, strategy="ddp", console=Console(file=buf, force_terminal=False, width=100))
    torch.save({"scores": res.scores, "stats": res.layer_stats, "mean_loss": res.mean_loss, "rank": res.rank,
                "world_size": res.world_size, "progress": buf.getvalue()},
               Path(out_dir) / f"rank{res.rank}.pt")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "NODE_RANK", "GROUP_RANK", "LOCAL_WORLD_SIZE",
                        "MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_RUN_ID")}
    # two ranks share two cores: one thread each avoids oversubscription
    env.update(PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONWARNINGS="ignore",
               HF_HUB_OFFLINE="1", TRANSFORMERS_NO_ADVISORY_WARNINGS="1")
    return env


def _launch(mode: str, out_dir: Path) -> None:
    cmd = [sys.executable, str(Path(__file__).resolve()), str(out_dir)]
    if mode == "popen":
        procs = [subprocess.Popen(cmd, env=_env(), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  start_new_session=True)]
    else:
        port = str(_free_port())
        procs = []
        for rank in range(2):
            env = _env() | {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port, "WORLD_SIZE": "2", "RANK": str(rank),
                            "LOCAL_RANK": str(rank), "NODE_RANK": "0", "GROUP_RANK": "0", "LOCAL_WORLD_SIZE": "2",
                            "TORCHELASTIC_RUN_ID": "gradprune-test"}
            procs.append(subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                          start_new_session=True))
    outputs = []
    try:
        for p in procs:
            out, _ = p.communicate(timeout=240)
            outputs.append(out.decode(errors="replace"))
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)  # the group: also a rank Lightning started from it
    assert all(p.returncode == 0 for p in procs), "\n".join(o[-3000:] for o in outputs)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["popen", "torchrun"])
def test_ddp_matches_single_process(mode, tmp_path):
    _launch(mode, tmp_path)
    ref = _calibrate(devices=1, strategy="auto")
    for rank in range(2):
        got = torch.load(tmp_path / f"rank{rank}.pt")
        assert got["rank"] == rank and got["world_size"] == 2
        for name in ESTIMATORS:
            assert set(got["scores"][name]) == set(ref.scores[name])
            for key, s in ref.scores[name].items():
                torch.testing.assert_close(got["scores"][name][key], s, rtol=1e-5, atol=1e-9,
                                           msg=lambda m, n=name, k=key: f"{n} {k}: {m}")
        for col in COLLECTORS:
            assert got["stats"][col] == pytest.approx(ref.layer_stats[col], rel=1e-6, abs=1e-12)
        assert got["mean_loss"] == pytest.approx(ref.mean_loss, rel=1e-6)
    # progress is shown by rank 0 only
    assert "calibrating" in torch.load(tmp_path / "rank0.pt")["progress"]
    assert torch.load(tmp_path / "rank1.pt")["progress"] == ""


def test_too_few_micro_batches_for_the_ranks_is_an_error():
    from gradprune.calibration import CalibrationModule, Needs
    from gradprune.errors import CalibrationError

    class _Trainer:
        global_rank, world_size = 0, 2

    module = CalibrationModule(torch.nn.Linear(1, 1), [torch.zeros(1, 4)], None, Needs(True, False, False, False))
    module._trainer = _Trainer()
    with pytest.raises(CalibrationError, match="cannot be shared by 2"):
        module.train_dataloader()


@pytest.mark.parametrize("name", ["ddp_spawn", "ddp_fork", "ddp_notebook"])
def test_worker_launched_strategies_are_refused(name):
    from gradprune.errors import RecipeError
    from gradprune.strategy import resolve_strategy

    with pytest.raises(RecipeError, match="torchrun"):
        resolve_strategy(name)


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    _worker(sys.argv[1])
