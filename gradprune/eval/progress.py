"""Evaluation progress: one rich progress row per perplexity text / zero-shot task, under a header.

On a terminal the rows update live. Elsewhere (a log file, a pipe, CI) nothing is redrawn; a plain
line is printed as each row finishes, so logs show what was evaluated and how long it took. Each
block is headed ``dense`` or ``pruned`` so the two evaluations of a run can be told apart, and every
step is also reported as the run's stage (``dense eval`` / ``pruned eval``, see
:func:`gradprune.progress.report_stage`).
"""

from __future__ import annotations

import time
from typing import Any

from gradprune.progress import report_stage


class EvalProgress:
    """A context manager holding the progress rows of one evaluation.

    ``title``: the header (``dense`` or ``pruned``), given by the caller.
    """

    def __init__(self, console: Any = None, enabled: bool = True, title: str = "pruned") -> None:
        from rich.console import Console

        self.console = console if console is not None else Console(stderr=True)
        self.enabled = enabled
        self.title = title
        self.live = enabled and self.console.is_terminal
        self._rows: dict[str, Any] = {}
        self._labels: dict[str, str] = {}
        self._started: dict[str, float] = {}
        self._done: dict[str, int] = {}
        self._total: dict[str, int | None] = {}
        self._progress = self._make_progress() if self.live else None

    @property
    def stage(self) -> str:
        """The run's stage while this evaluation runs: ``dense eval`` or ``pruned eval``."""
        return f"{self.title} eval"

    def _make_progress(self) -> Any:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        return Progress(
            # markup off: a row's label and note carry task and data set names, which are the user's
            TextColumn("{task.description:<24}", markup=False), BarColumn(bar_width=20), MofNCompleteColumn(),
            TimeElapsedColumn(), TextColumn("{task.fields[note]}", markup=False), console=self.console,
        )

    def __enter__(self) -> EvalProgress:
        if self.enabled:
            self.console.print(f"[bold]{self.title}[/] model evaluation", highlight=False)
        report_stage(self.stage)
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()

    def _report(self, key: str) -> None:
        total = self._total.get(key)
        count = f"{self._done[key]:,}/{total:,}" if total else f"{self._done[key]:,}"
        report_stage(self.stage, f"{self._labels[key]} {count}")

    def add_row(self, key: str, label: str, total: int | None = None) -> None:
        """A new row (``total`` may come later through :meth:`set_total`)."""
        self._labels[key] = label
        self._started[key] = time.perf_counter()
        self._done[key], self._total[key] = 0, total
        if self._progress is not None:
            self._rows[key] = self._progress.add_task(label, total=total, note="")
        self._report(key)

    def set_total(self, key: str, total: int) -> None:
        """The number of steps of a row, once it is known."""
        if key in self._labels:
            self._total[key] = total
        if self._progress is not None and key in self._rows:
            self._progress.update(self._rows[key], total=total)

    def advance(self, key: str, steps: int = 1) -> None:
        """``steps`` more steps of a row are done."""
        if key in self._labels:
            self._done[key] += steps
            self._report(key)
        if self._progress is not None and key in self._rows:
            self._progress.advance(self._rows[key], steps)

    def finish(self, key: str, note: str = "", seconds: float | None = None) -> None:
        """A row is complete; ``note`` (e.g. the metric) is shown beside it or printed as a line.

        ``seconds`` replaces the time since the row was added in that line (for rows that share work).
        """
        if key not in self._labels:
            return
        if self._progress is not None:
            row = self._rows[key]
            total = self._progress.tasks[self._progress.task_ids.index(row)].total
            done = total if total is not None else 1
            self._progress.update(row, total=done, completed=done, note=note)
        elif self.enabled:
            secs = seconds if seconds is not None else time.perf_counter() - self._started[key]
            self.console.print(f"{self._labels[key]}: {note} ({secs:.1f} s)", markup=False, highlight=False)
