"""The search's live view: a rich table of trials, the running trial's stage, progress and ETA.

On a terminal the view is redrawn every second (the ETA counts down, the stage of the running trial
moves: loading → dense eval → calibrating k/n → pruning → pruned eval, task t n/N). Elsewhere (a log
file, a pipe) it prints plain lines: one per trial start and end, and one per stage a trial enters.

The ETA is the mean duration of the trials finished so far (every worker's, when the study is known)
times the trials left, divided by the number of workers seen running, counted down between trials.
rich's own ``TimeRemainingColumn`` cannot be used: it estimates speed only from steps less than 30 s
apart, and a trial is longer than that.
"""

from __future__ import annotations

import os
import socket
import time
from contextlib import ExitStack
from typing import Any

from rich import box
from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from gradprune.progress import watching_stages

# what a trial shown as running becomes when Ctrl-C stops the search (the worker re-enqueues its point)
INTERRUPTED = "interrupted"


def _fmt(v: Any, spec: str = ".4f") -> str:
    if v is None or v == "":
        return "-"
    try:
        return format(float(v), spec)
    except (TypeError, ValueError):
        return str(v)


def _acc(r: dict[str, Any]) -> str:
    """acc_mean, or for a trial evaluated on part of the examples its accuracy there (``0.7500@0.125``)."""
    if r.get("acc_mean") in (None, "") and r.get("acc_mean_at_fraction") not in (None, ""):
        return f"{_fmt(r['acc_mean_at_fraction'])}@{_fmt(r.get('eval_fraction'), 'g')}"
    return _fmt(r.get("acc_mean"))


def short_names(keys: list[str]) -> dict[str, str]:
    """Each dotted grid key by its shortest distinguishing tail: ``calibration.seq_len`` → ``seq_len``,
    but ``pruning.ratio`` / ``other.ratio`` keep their section to tell them apart."""
    out: dict[str, str] = {}
    for key in keys:
        parts = key.split(".")
        for n in range(1, len(parts) + 1):
            tail = ".".join(parts[-n:])
            if not any(o != key and (o == tail or o.endswith("." + tail)) for o in keys):
                out[key] = tail
                break
        else:
            out[key] = key
    return out


def eta_seconds(durations: list[float], remaining: int, workers: int = 1, elapsed: float = 0.0) -> float | None:
    """Seconds until the search ends: mean trial time × trials left / workers, less the time that has
    passed since the estimate (``elapsed``). ``None`` before the first trial has finished."""
    if remaining <= 0:
        return 0.0
    if not durations:
        return None
    mean = sum(durations) / len(durations)
    return max(0.0, mean * remaining / max(1, workers) - elapsed)


def format_eta(seconds: float | None) -> str:
    """``H:MM:SS``, or ``-:--:--`` while no estimate exists."""
    if seconds is None:
        return "-:--:--"
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def study_progress(study) -> tuple[int, list[float], int]:
    """From the study: (trials ended for good, their durations in seconds, workers seen: this one plus
    every other process running a trial now)."""
    from optuna.trial import TrialState

    done, durations, owners = 0, [], {(socket.gethostname(), os.getpid())}
    for t in study.get_trials(deepcopy=False):
        if t.state.is_finished() and not t.user_attrs.get("retried"):
            done += 1
            d = t.user_attrs.get("duration_s")
            if isinstance(d, (int, float)) and d > 0:
                durations.append(float(d))
        elif t.state == TrialState.RUNNING:
            owner = t.system_attrs.get("gradprune_owner") or {}
            owners.add((owner.get("host"), owner.get("pid")))
    return done, durations, len(owners)


class SearchDisplay:
    """One row per trial (status, grid values, acc_mean, ppl, grad_norm_ratio, duration), the running
    trial's stage, and the search's progress with an ETA.

    ``study`` (optional): the Optuna study, read after every trial so that the progress and the ETA
    count every worker's trials; without it the display counts only what it saw itself.

    The display is a rich renderable (``console.print(display)`` shows what the live view shows now).
    """

    def __init__(self, console: Console, keys: list[str], total: int, done: int = 0, study=None,
                 clock=time.monotonic) -> None:
        self.console, self.keys, self.study, self.clock = console, keys, study, clock
        self.names = short_names(keys)
        self.rows: dict[int, dict[str, Any]] = {}
        self.total, self.done = total, done
        self.durations: list[float] = []
        self.workers = 1
        self.estimated_at = clock()
        self.stage: dict[int, tuple[str, str, float]] = {}  # trial → (stage, detail, since)
        self.progress = Progress(TextColumn("[bold]search"), BarColumn(bar_width=24), MofNCompleteColumn(),
                                 TimeElapsedColumn(), TextColumn("ETA {task.fields[eta]}"), console=console)
        self.task = self.progress.add_task("trials", total=total, completed=done, eta=format_eta(None))
        self.live: Live | None = None
        self._stages = ExitStack()

    # -- lifetime ---------------------------------------------------------------------------------
    def __enter__(self) -> SearchDisplay:
        self._sync()
        if self.console.is_terminal:
            self.live = Live(console=self.console, get_renderable=self.__rich__, refresh_per_second=1,
                             transient=False)
            self.live.__enter__()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self._stages.close()
        if exc_type is not None and issubclass(exc_type, KeyboardInterrupt):
            for n, r in self.rows.items():  # the worker re-enqueued it; the table must not say running
                if r.get("status") == "running":
                    r["status"] = INTERRUPTED
                    if self.live is None:
                        self.console.print(f"trial {n} {INTERRUPTED} (it will run again on resume)",
                                           markup=False, highlight=False, soft_wrap=True)
        self.stage.clear()
        if self.live is not None:
            self.live.refresh()
            self.live.__exit__(exc_type, exc, tb)

    # -- the ETA ----------------------------------------------------------------------------------
    def _sync(self) -> None:
        """Re-read progress (from the study when there is one) and restart the ETA's countdown."""
        if self.study is not None:
            self.done, self.durations, self.workers = study_progress(self.study)
        self.estimated_at = self.clock()
        self.progress.update(self.task, total=self.total, completed=self.done)

    def eta(self) -> float | None:
        """Seconds left, counted down since the last trial ended."""
        return eta_seconds(self.durations, self.total - self.done, self.workers, self.clock() - self.estimated_at)

    # -- rendering --------------------------------------------------------------------------------
    def _table(self) -> Table:
        # no vertical rules: in 80 columns every header must stay whole (rich cuts a tight header to ``acc_m…``)
        t = Table(header_style="bold", title="trials", box=box.SIMPLE_HEAD, padding=(0, 0),
                  show_edge=False)
        t.add_column("trial", justify="right")
        t.add_column("status")
        for k in self.keys:
            t.add_column(self.names[k], justify="right", no_wrap=True)
        for c in ("acc_mean", "ppl", "grad_norm_ratio", "time (s)"):
            t.add_column(c, justify="right")
        for n in sorted(self.rows)[-30:]:
            r = self.rows[n]
            # Text, not markup: a status or grid value is the user's text and may hold [brackets]
            cells = [str(n), r.get("status", ""), *[str(r.get(k, "")) for k in self.keys], _acc(r),
                     _fmt(r.get("ppl"), ".3f"), _fmt(r.get("grad_norm_ratio"), ".3f"), _fmt(r.get("duration_s"), ".1f")]
            t.add_row(*(Text(str(c)) for c in cells))
        return t

    def stage_line(self, number: int) -> str:
        """``trial 3: calibrating 5/8 (0:00:12 in this stage)``."""
        stage, detail, since = self.stage[number]
        text = f"trial {number}: {stage}" + (f" {detail}" if detail else "")
        return f"{text} ({format_eta(self.clock() - since)} in this stage)"

    def __rich__(self) -> Group:
        """The live view: the trials' table, each running trial's stage line, the progress bar with its ETA."""
        self.progress.update(self.task, eta=format_eta(self.eta()))
        stages = [Text(self.stage_line(n), style="cyan") for n in sorted(self.stage)]
        return Group(self._table(), *stages, self.progress)

    # -- events -----------------------------------------------------------------------------------
    def set_total(self, total: int) -> None:
        """The number of trials changed (synchronous halving enqueues the promoted points of a rung)."""
        self.total = total
        self.progress.update(self.task, total=total)

    def on_stage(self, number: int, stage: str, detail: str = "") -> None:
        """The running trial ``number`` entered ``stage`` (or moved on within it: ``detail``)."""
        old = self.stage.get(number)
        since = old[2] if old is not None and old[0] == stage else self.clock()
        self.stage[number] = (stage, detail, since)
        if self.live is None and (old is None or old[0] != stage):
            self.console.print(f"trial {number}: {stage}" + (f" {detail}" if detail else ""), markup=False,
                               highlight=False, soft_wrap=True)

    def started(self, number: int, point: dict[str, Any]) -> None:
        """A trial began on this worker; stages reported inside it (until :meth:`finished`) are shown."""
        self._sync()
        self.rows[number] = {"status": "running", **point}
        if self.live is None:
            self.console.print(f"trial {number} started: {point}", markup=False, highlight=False, soft_wrap=True)
        self._stages.close()
        self._stages.enter_context(watching_stages(lambda stage, detail: self.on_stage(number, stage, detail)))
        self.on_stage(number, "loading")

    def finished(self, number: int, row: dict[str, Any]) -> None:
        """A trial ended (complete or failed)."""
        self._stages.close()
        self.stage.pop(number, None)
        self.rows[number] = row
        if self.study is None:
            self.done += 1
            if isinstance(row.get("duration_s"), (int, float)) and row["duration_s"] > 0:
                self.durations.append(float(row["duration_s"]))
        self._sync()
        if self.live is not None:
            return
        msg = (f"trial {number} {row.get('status')}: acc_mean={_acc(row)} ppl={_fmt(row.get('ppl'), '.3f')} "
               f"grad_norm_ratio={_fmt(row.get('grad_norm_ratio'), '.3f')} ({_fmt(row.get('duration_s'), '.1f')} s)"
               f"; {self.done}/{self.total} done, ETA {format_eta(self.eta())}")
        if row.get("error"):
            msg += f" error: {row['error']}"
        # markup off: an error quotes library text such as gloo's "[/__w/pytorch/.../pair.cc:553] ..."
        self.console.print(msg, markup=False, highlight=False, soft_wrap=True)
