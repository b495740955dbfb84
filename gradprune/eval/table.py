"""The final results table (rich): one row per metric, pruned beside dense when it is known."""

from __future__ import annotations

import math
from typing import Any

_SUMMARY = ("ppl", "acc_mean", "acc_norm_mean")


def _fmt(value: float | None, stderr: float | None = None) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        return str(value)
    text = f"{value:.4f}" if abs(value) < 1000 else f"{value:.1f}"
    return f"{text} ± {stderr:.4f}" if stderr is not None else text


def _row_names(metrics: dict[str, float]) -> list[str]:
    """Summary rows first, then perplexities, then per-task accuracies (stderr shown beside them)."""
    names = [k for k in _SUMMARY if k in metrics]
    rest = [k for k in metrics if k not in names and not k.endswith("_stderr") and not k.startswith("dense_")
            and k not in ("acc_drop", "acc_norm_drop", "ppl_ratio")]
    names += [k for k in rest if k.startswith("ppl")]
    names += [k for k in rest if not k.startswith("ppl")]
    return names


def _delta(name: str, value: float | None, dense_value: float | None) -> str:
    if value is None or dense_value is None:
        return ""
    if name.startswith("ppl"):
        return f"×{value / dense_value:.3f}" if dense_value else ""
    return f"{value - dense_value:+.4f}"


def print_results_table(metrics: dict[str, float], dense: dict[str, float] | None = None,
                        console: Any = None, title: str = "evaluation") -> None:
    """Print metrics (and dense metrics with the change: difference for accuracy, ratio for ppl)."""
    from rich.console import Console
    from rich.table import Table

    console = console if console is not None else Console()
    dense = dense or {}
    table = Table(title=title)
    table.add_column("metric")
    table.add_column("pruned" if dense else "value", justify="right")
    if dense:
        table.add_column("dense", justify="right")
        table.add_column("change", justify="right")
    for name in _row_names(metrics):
        value = metrics[name]
        cells = [name, _fmt(value, metrics.get(f"{name}_stderr"))]
        if dense:
            d = dense.get(name)
            cells += [_fmt(d, dense.get(f"{name}_stderr")), _delta(name, value, d)]
        table.add_row(*cells)
    console.print(table)
