"""rich progress for calibration (a Lightning callback) and the run's summary tables."""

from __future__ import annotations

import time

import lightning as L
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table


class CalibrationProgress(L.Callback):
    """Live view of calibration: micro-batches done/total, tokens/s and the running loss."""

    def __init__(self, console: Console, total_batches: int, tokens_per_batch: int, label: str = "calibrating"):
        self.console = console
        self.total = total_batches
        self.tokens_per_batch = tokens_per_batch
        self.label = label
        self.progress: Progress | None = None

    def on_train_start(self, trainer, pl_module) -> None:
        if trainer.global_rank != 0:
            return
        self.progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[tps]} tok/s"), TextColumn("loss {task.fields[loss]}"), TimeElapsedColumn(),
            console=self.console, transient=False,
        )
        self.progress.start()
        self.task = self.progress.add_task(self.label, total=self.total, tps="-", loss="-")
        self.t0 = time.perf_counter()
        self.done = 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.progress is None:
            return
        self.done += 1
        dt = max(time.perf_counter() - self.t0, 1e-9)
        tps = f"{self.done * self.tokens_per_batch * trainer.world_size / dt:,.0f}"
        loss = pl_module.losses[-1] if pl_module.losses else float("nan")
        self.progress.update(self.task, advance=1, tps=tps, loss=f"{loss:.3f}")

    def on_train_end(self, trainer, pl_module) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None

    def on_exception(self, trainer, pl_module, exception) -> None:
        self.on_train_end(trainer, pl_module)  # never leave a live display behind


def layer_table(rows: list[dict], title: str = "per-layer plan") -> Table:
    """One row per layer: KV groups and channels kept, pruning rate, gradient norm."""
    t = Table(title=title, header_style="bold")
    for col in ("layer", "kv kept", "channels kept", "params after", "pruned", "grad_norm"):
        t.add_column(col, justify="right")
    for r in rows:
        gn = r.get("grad_norm")
        t.add_row(str(r["layer"]), f"{r['kv_groups_kept']}/{r['kv_groups_before']}",
                  f"{r['mlp_channels_kept']}/{r['mlp_channels_before']}", f"{r['params_after']:,}",
                  f"{r['pruning_rate']:.1%}", "-" if gn is None else f"{gn:.3e}")
    return t


def summary_table(metrics: dict, title: str = "run summary") -> Table:
    """The headline numbers of a run (pruned vs dense where the dense value is known)."""
    t = Table(title=title, header_style="bold")
    t.add_column("metric")
    t.add_column("pruned", justify="right")
    t.add_column("dense", justify="right")

    def fmt(v) -> str:
        if v is None:
            return "-"
        if isinstance(v, float):
            return f"{v:,.4f}" if abs(v) < 1e4 else f"{v:,.0f}"
        return f"{v:,}" if isinstance(v, int) else str(v)

    t.add_row("params", fmt(metrics.get("params_after")), fmt(metrics.get("params_before")))
    t.add_row("pruning_ratio (achieved)", fmt(metrics.get("pruning_ratio")), "")
    for k in sorted(metrics):
        if k.startswith("ppl") and not k.startswith("ppl_ratio"):
            t.add_row(k, fmt(metrics[k]), fmt(metrics.get(f"dense_{k}")))
    for k in sorted(metrics):
        if k.startswith("acc_") and "stderr" not in k and not k.endswith("_drop"):
            t.add_row(k, fmt(metrics[k]), fmt(metrics.get(f"dense_{k}")))
    for k in ("grad_norm_ratio", "grad_mean_ratio", "grad_std_ratio", "grad_max_ratio", "extreme_pruning_layers"):
        if k in metrics:
            t.add_row(k, fmt(metrics[k]), "")
    return t
