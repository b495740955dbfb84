"""Evaluation progress: one rich progress row per perplexity text / zero-shot task.

On a terminal the rows update live. Elsewhere (a log file, a pipe, CI) nothing is redrawn; a plain
line is printed as each row finishes, so logs show what was evaluated and how long it took.
"""

from __future__ import annotations

import time
from typing import Any


class EvalProgress:
    """A context manager holding the progress rows of one evaluation."""

    def __init__(self, console: Any = None, enabled: bool = True) -> None:
        from rich.console import Console

        self.console = console if console is not None else Console(stderr=True)
        self.enabled = enabled
        self.live = enabled and self.console.is_terminal
        self._rows: dict[str, Any] = {}
        self._labels: dict[str, str] = {}
        self._started: dict[str, float] = {}
        self._progress = self._make_progress() if self.live else None

    def _make_progress(self) -> Any:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        return Progress(
            TextColumn("{task.description:<28}"), BarColumn(), MofNCompleteColumn(),
            TimeElapsedColumn(), TextColumn("{task.fields[note]}"), console=self.console,
        )

    def __enter__(self) -> EvalProgress:
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()

    def add_row(self, key: str, label: str, total: int | None = None) -> None:
        """A new row (``total`` may come later through :meth:`set_total`)."""
        self._labels[key] = label
        self._started[key] = time.perf_counter()
        if self._progress is not None:
            self._rows[key] = self._progress.add_task(label, total=total, note="")

    def set_total(self, key: str, total: int) -> None:
        """The number of steps of a row, once it is known."""
        if self._progress is not None and key in self._rows:
            self._progress.update(self._rows[key], total=total)

    def advance(self, key: str, steps: int = 1) -> None:
        """``steps`` more steps of a row are done."""
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
            self.console.print(f"{self._labels[key]}: {note} ({secs:.1f} s)", highlight=False)
