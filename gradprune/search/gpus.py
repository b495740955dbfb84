"""``gradprune search --gpus all|0,1,3``: one search worker process per GPU, sharing the study.

A trial on several devices cannot run inside a search: Lightning starts the extra ranks by re-running
the whole command line, so each copy becomes a search worker that claims grid points of its own, and
rank 0 would combine accumulators of different settings. Instead this process checks the search once,
opens the study (enqueuing the grid), and starts one ``gradprune search`` worker per GPU with
``CUDA_VISIBLE_DEVICES`` set to that GPU alone; the workers claim trials from the shared study exactly
as workers started by hand do, and each writes the shared results table after its trials. This process
shows every worker's trials and the ETA (read from the study), and each worker's own output goes to
``<output_dir>/workers/gpu<N>.log``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from rich.console import Console

from gradprune.errors import GradpruneError

#: seconds between two reads of the study while the workers run
POLL_S = 2.0


def visible_gpus() -> list[str]:
    """The GPUs this process may hand out, as ``CUDA_VISIBLE_DEVICES`` entries (this process's own list
    when it is set, else ``0..n-1``)."""
    import torch

    n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None and env.strip():
        return [d.strip() for d in env.split(",") if d.strip()][:n]
    return [str(i) for i in range(n)]


def parse_gpus(text: str, available: list[str]) -> list[str]:
    """``--gpus`` → the ``CUDA_VISIBLE_DEVICES`` entry of each worker. ``all``, or indices into
    ``available`` (``0,1,3``), each once."""
    if not available:
        raise GradpruneError("--gpus: no CUDA GPU is visible to this process (torch.cuda.device_count() is 0); "
                             "run the search without --gpus")
    if text.strip().lower() == "all":
        return list(available)
    try:
        wanted = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise GradpruneError(f"--gpus {text!r}: expected 'all' or GPU indices such as 0,1,3") from None
    bad = [i for i in wanted if not 0 <= i < len(available)]
    if not wanted or bad or len(set(wanted)) != len(wanted):
        why = f"no GPU {bad[0]}" if bad else "an index repeats" if wanted else "no index given"
        raise GradpruneError(f"--gpus {text!r}: {why}; this process sees {len(available)} GPU(s): "
                             f"{', '.join(map(str, range(len(available))))} (or 'all')")
    return [available[i] for i in wanted]


def multi_device_refusal(recipe: Any, where: str) -> str | None:
    """Why ``recipe`` cannot be a trial of a search (it asks for several devices), with the ``--gpus``
    alternative; None when it runs on one device."""
    from gradprune.parallel import device_count

    t = recipe.trainer
    n = device_count(t.devices, t.accelerator)
    if n == 1 and t.num_nodes == 1:
        return None
    asked = f"trainer.devices={t.devices!r}" + (f", trainer.num_nodes={t.num_nodes}" if t.num_nodes > 1 else "")
    return (f"{where}: {asked} inside a search: Lightning starts the other ranks of a multi-device trial by "
            f"re-running the whole command, so each copy would act as a search worker claiming grid points of "
            f"its own (and the ranks would combine accumulators of different settings). Run one single-device "
            f"worker per GPU instead: gradprune search RECIPE --gpus all (or --gpus 0,1), with trainer.devices: 1")


def worker_command(argv: list[str]) -> list[str]:
    """The command line of one worker: this ``gradprune search`` without ``--gpus``, ``--overwrite`` and
    ``--retry-failed`` (done once here), with the output dir fixed."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg in ("--gpus", "--output_dir", "--output-dir"):
            skip = True
            continue
        if arg.startswith(("--gpus=", "--output_dir=", "--output-dir=")) or arg in ("--overwrite", "--retry-failed",
                                                                                  "--retry_failed"):
            continue
        out.append(arg)
    return [sys.executable, "-m", "gradprune.cli", *out]


def run_workers(gpus: list[str], argv: list[str], out: Path, study, space: dict[str, list[Any]], total: int,
                console: Console) -> int:
    """Start one worker per entry of ``gpus``, show the study's trials until every worker ended; returns 0
    when all succeeded, else the first failing worker's exit code."""
    from gradprune.search.live import SearchDisplay

    logs = out / "workers"
    logs.mkdir(parents=True, exist_ok=True)
    cmd = worker_command(argv) + ["--output_dir", str(out)]
    procs: list[tuple[str, subprocess.Popen, Path]] = []
    for gpu in gpus:
        log = logs / f"gpu{gpu}.log"
        env = {**os.environ, "CUDA_VISIBLE_DEVICES": gpu, "PYTHONUNBUFFERED": "1"}
        fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)  # the worker's output stream
        try:
            procs.append((gpu, subprocess.Popen(cmd, env=env, stdout=fd, stderr=subprocess.STDOUT), log))
        finally:
            os.close(fd)
    console.print(f"started {len(procs)} worker(s), one per GPU ({', '.join(gpus)}); their output: {logs}/",
                  markup=False, highlight=False, soft_wrap=True)
    gpu_of = {p.pid: gpu for gpu, p, _ in procs}
    with SearchDisplay(console, list(space), total, study=study) as display:
        follow = _Follower(study, space, display, gpu_of)
        while any(p.poll() is None for _, p, _ in procs):
            follow.update()
            time.sleep(POLL_S)
        follow.update()
    failed = [(gpu, p.returncode, log) for gpu, p, log in procs if p.returncode != 0]
    for gpu, rc, log in failed:
        console.print(f"worker on GPU {gpu} exited with code {rc}; see {log}", style="red", markup=False,
                      highlight=False, soft_wrap=True)
    return failed[0][1] if failed else 0


class _Follower:
    """Turns what the study holds into the display's events (trials started and ended by any worker)."""

    def __init__(self, study, space: dict[str, list[Any]], display, gpu_of: dict[int, str]) -> None:
        self.study, self.space, self.display, self.gpu_of = study, space, display, gpu_of
        self.running: set[int] = set()
        self.ended: set[int] = {t.number for t in study.get_trials(deepcopy=False) if t.state.is_finished()}

    def update(self) -> None:
        """Report the trials that started or ended since the last call."""
        from optuna.trial import TrialState

        from gradprune.search.study import decode, trial_params

        trials = self.study.get_trials(deepcopy=False)
        self.display.set_total(max(self.display.total, len(trials)))
        for t in trials:
            point = {k: decode(v) for k, v in trial_params(t).items() if k in self.space}
            if t.state == TrialState.RUNNING and t.number not in self.running:
                self.running.add(t.number)
                self.display.started(t.number, point)
                owner = t.system_attrs.get("gradprune_owner") or {}
                gpu = self.gpu_of.get(owner.get("pid"))
                self.display.on_stage(t.number, f"running on GPU {gpu}" if gpu is not None else "running")
            elif t.state.is_finished() and t.number not in self.ended:
                self.ended.add(t.number)
                self.running.discard(t.number)
                attrs = dict(t.user_attrs)
                row = {**point, **attrs.pop("metrics", {}), **attrs}
                row.setdefault("status", t.state.name.lower())
                self.display.finished(t.number, row)
