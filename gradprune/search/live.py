"""The search's live view: a rich table of trials with progress and ETA (plain lines off a terminal)."""

from __future__ import annotations

import time
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table


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


class SearchDisplay:
    """One row per trial (status, grid values, acc_mean, ppl, grad_norm_ratio, duration)."""

    def __init__(self, console: Console, keys: list[str], total: int, done: int = 0) -> None:
        self.console, self.keys = console, keys
        self.rows: dict[int, dict[str, Any]] = {}
        self.progress = Progress(TextColumn("[bold]search"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), console=console)
        self.task = self.progress.add_task("trials", total=total, completed=done)
        self.live: Live | None = None
        self.t0 = time.time()

    def __enter__(self) -> SearchDisplay:
        if self.console.is_terminal:
            self.live = Live(self._render(), console=self.console, refresh_per_second=2, transient=False)
            self.live.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self.live is not None:
            self.live.update(self._render())
            self.live.__exit__(*exc)

    def _render(self) -> Group:
        t = Table(header_style="bold", title="trials")
        for c in ["trial", "status", *self.keys, "acc_mean", "ppl", "grad_norm_ratio", "s"]:
            t.add_column(c, justify="right")
        for n in sorted(self.rows)[-30:]:
            r = self.rows[n]
            t.add_row(str(n), r.get("status", ""), *[str(r.get(k, "")) for k in self.keys], _acc(r),
                      _fmt(r.get("ppl"), ".3f"), _fmt(r.get("grad_norm_ratio"), ".3f"), _fmt(r.get("duration_s"), ".1f"))
        return Group(t, self.progress)

    def set_total(self, total: int) -> None:
        """The number of trials changed (synchronous halving enqueues the promoted points of a rung)."""
        self.progress.update(self.task, total=total)

    def started(self, number: int, point: dict[str, Any]) -> None:
        """A trial began on this worker."""
        self.rows[number] = {"status": "running", **point}
        if self.live is not None:
            self.live.update(self._render())
        else:
            self.console.print(f"trial {number} started: {point}", highlight=False)

    def finished(self, number: int, row: dict[str, Any]) -> None:
        """A trial ended (complete or failed)."""
        self.rows[number] = row
        self.progress.advance(self.task)
        if self.live is not None:
            self.live.update(self._render())
            return
        msg = (f"trial {number} {row.get('status')}: acc_mean={_acc(row)} ppl={_fmt(row.get('ppl'), '.3f')} "
               f"grad_norm_ratio={_fmt(row.get('grad_norm_ratio'), '.3f')} ({_fmt(row.get('duration_s'), '.1f')} s)")
        if row.get("error"):
            msg += f" error: {row['error']}"
        self.console.print(msg, highlight=False)
