"""Progress of a run: the stage it is in, calibration's live view (a Lightning callback), summary tables.

Nothing heavy is imported here: ``gradprune run`` imports this module before the recipe is checked,
and Lightning (≈5 s) is imported only when :class:`CalibrationProgress` is first used.

Stages: the calibration callback and the evaluation rows call :func:`report_stage`; whoever watches
the run (the search's live table, which runs trials with a quiet console) installs a listener with
:func:`watching_stages` and so sees "calibrating 3/8" or "pruned eval: task arc_easy 120/500".
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from rich import box
from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

# (stage, detail): stage is coarse ("loading", "dense eval", "calibrating", "pruned eval"), detail fine
StageListener = Callable[[str, str], None]
_LISTENER: ContextVar[StageListener | None] = ContextVar("gradprune_stage_listener", default=None)


def print_plain(console: Console, text: str, style: str | None = None) -> None:
    """A line of plain text (markup off: it may quote a path, the user's or a library's text): word-wrapped
    on a terminal, kept on one line in a log file or a pipe (where nothing wraps it mid-word)."""
    console.print(text, style=style, markup=False, highlight=False, soft_wrap=not console.is_terminal)


def report_stage(stage: str, detail: str = "") -> None:
    """Tell whoever watches this run what it is doing now (nothing happens when nobody watches)."""
    listener = _LISTENER.get()
    if listener is not None:
        listener(stage, detail)


@contextmanager
def watching_stages(listener: StageListener) -> Iterator[None]:
    """``listener(stage, detail)`` receives every stage reported inside the block."""
    token = _LISTENER.set(listener)
    try:
        yield
    finally:
        _LISTENER.reset(token)


def _calibration_progress_class() -> type:
    import lightning as L
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    class CalibrationProgress(L.Callback):
        """Live view of calibration: micro-batches done/total, tokens/s and the running loss.

        Also reports the stage ``calibrating k/n`` (see :func:`report_stage`).
        """

        def __init__(self, console: Console, total_batches: int, tokens_per_batch: float,
                     label: str = "calibrating", after: tuple[str, str] = ("pruning", "scores → plan → cut")) -> None:
            self.console = console
            self.total = total_batches
            self.tokens_per_batch = tokens_per_batch
            self.label = label
            self.after = after  # the stage reported when the pass ends
            self.progress: Progress | None = None

        def on_train_start(self, trainer, pl_module) -> None:
            if trainer.global_rank != 0:
                return
            self.progress = Progress(
                TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("{task.fields[tps]} tok/s"), TextColumn("loss {task.fields[loss]}"),
                TimeElapsedColumn(), console=self.console, transient=False,
            )
            self.progress.start()
            self.task = self.progress.add_task(self.label, total=self.total, tps="-", loss="-")
            self.t0 = time.perf_counter()
            self.done = 0
            report_stage(self.label, f"0/{self.total}")

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            if self.progress is None:
                return
            # every rank takes one micro-batch per step (DDP / FSDP): count them all, not rank 0's alone
            step = min(trainer.world_size, self.total - self.done)
            self.done += step
            dt = max(time.perf_counter() - self.t0, 1e-9)
            tps = f"{self.done * self.tokens_per_batch / dt:,.0f}"
            # the losses reach the host at calibration's checks (every calibration.check_every micro-batches)
            loss = f"{pl_module.losses[-1]:.3f}" if pl_module.losses else "-"
            self.progress.update(self.task, advance=step, tps=tps, loss=loss)
            report_stage(self.label, f"{self.done}/{self.total}")

        def on_train_end(self, trainer, pl_module) -> None:
            if self.progress is not None:
                self.progress.stop()
                self.progress = None
                report_stage(*self.after)

        def on_exception(self, trainer, pl_module, exception) -> None:
            self.on_train_end(trainer, pl_module)  # never leave a live display behind

    CalibrationProgress.__module__, CalibrationProgress.__qualname__ = __name__, "CalibrationProgress"  # picklable
    return CalibrationProgress


def __getattr__(name: str) -> Any:
    # CalibrationProgress subclasses lightning's Callback: built (and Lightning imported) on first use
    if name == "CalibrationProgress":
        cls = _calibration_progress_class()
        globals()[name] = cls
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# ---------------------------------------------------------------------------------------------
# the run's tables: the console side of what gradprune.record writes

_STATS_PER_TABLE = 7


def _sci(v: Any) -> str:
    if v is None:
        return "-"
    try:
        f = float(v)
    except (TypeError, ValueError):
        return str(v)
    return f"{f:.2e}" if math.isfinite(f) else str(f)


def layer_table(rows: list[dict], stats: list[str], title: str = "per-layer plan") -> Group:
    """One row per layer: KV groups and channels kept, pruning rate; then each statistic named in ``stats``
    (the collectors', built-in or plugin) per layer, as a second table so that both fit 80 columns."""
    plan = Table(title=title, header_style="bold")
    for col in ("layer", "kv kept", "channels kept", "params after", "pruned"):
        plan.add_column(col, justify="right")
    for r in rows:
        plan.add_row(str(r["layer"]), f"{r['kv_groups_kept']}/{r['kv_groups_before']}",
                     f"{r['mlp_channels_kept']}/{r['mlp_channels_before']}", f"{r['params_after']:,}",
                     f"{r['pruning_rate']:.1%}")
    names = list(stats)
    tables = [plan]
    for i in range(0, len(names), _STATS_PER_TABLE):
        chunk = names[i:i + _STATS_PER_TABLE]
        # no vertical rules, so that seven statistic columns keep whole headers in 80 columns
        st = Table(title="gradient statistics per layer" if i == 0 else None, header_style="bold",
                   box=box.SIMPLE_HEAD, padding=(0, 0), show_edge=False)
        st.add_column("layer", justify="right")
        for n in chunk:
            st.add_column(Text(n), justify="right")  # Text: a plugin collector's name is printed as written
        for r in rows:
            st.add_row(str(r["layer"]), *[_sci(r.get(n)) for n in chunk])
        tables.append(st)
    return Group(*tables)


def ratio_names(metrics: dict) -> list[str]:
    """Every collector's cross-layer ``<stat>_ratio`` in the metrics (recognised by the ``<stat>_max_layer``
    written beside it; ``ppl_ratio`` has none)."""
    return [k for k in metrics if k.endswith("_ratio") and f"{k.removesuffix('_ratio')}_max_layer" in metrics]


def summary_table(metrics: dict, title: str = "run summary") -> Table:
    """The headline numbers of a run (pruned vs dense where the dense value is known, and after recovery
    when the run had one), and every configured collector's cross-layer ratio."""
    recovered = any(k.endswith("_recovered") and not k.startswith("time_") for k in metrics)
    t = Table(title=title, header_style="bold")
    t.add_column("metric")
    t.add_column("pruned", justify="right")
    if recovered:
        t.add_column("recovered", justify="right")
    t.add_column("dense", justify="right")

    def fmt(v) -> str:
        if v is None:
            return "-"
        if isinstance(v, float):
            return f"{v:,.4f}" if abs(v) < 1e4 else f"{v:,.0f}"
        return f"{v:,}" if isinstance(v, int) else str(v)

    def row(name: str, pruned: Any, dense: Any = "", key: str | None = None) -> None:
        # Text: task names are the user's; the recovered column holds ``<key>_recovered`` when the run had one
        after = [fmt(metrics.get(f"{key}_recovered"))] if recovered else []
        t.add_row(Text(name), fmt(pruned), *after, dense if dense == "" else fmt(dense))

    row("params", metrics.get("params_after"), metrics.get("params_before"))
    row("pruning_ratio (achieved)", metrics.get("pruning_ratio"))
    shown = [k for k in sorted(metrics) if not k.endswith("_recovered")]
    ppl = [k for k in shown if k.startswith("ppl") and not k.startswith("ppl_ratio")]
    parts = [k for k in ppl if k != "ppl"]
    if "ppl" in metrics and len(parts) == 1 and metrics[parts[0]] == metrics["ppl"]:
        # one text at one length: ppl is ppl_<text>, shown once under its text's name
        row(f"ppl ({parts[0].removeprefix('ppl_')})", metrics["ppl"], metrics.get("dense_ppl"), "ppl")
    else:
        for k in ppl:
            row(k, metrics[k], metrics.get(f"dense_{k}"), k)
    for k in shown:
        if k.startswith("acc_") and "stderr" not in k and not k.endswith("_drop"):
            row(k, metrics[k], metrics.get(f"dense_{k}"), k)
    # the cheap post-pruning proxies (eval/proxies.py); the dense loss is the proxy loss's dense column
    for k, dense in (("proxy_loss", metrics.get("proxy_dense_loss")), ("proxy_kl", ""), ("proxy_flip", "")):
        if k in metrics:
            row(k, metrics[k], dense)
    for k in [*ratio_names(metrics), "extreme_pruning_layers"]:
        if k in metrics:
            row(k, metrics[k])
    return t
