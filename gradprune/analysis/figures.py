"""The two figures, rendered to PNG bytes with matplotlib's Agg canvas (no pyplot, no global backend)."""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from gradprune.analysis.correlations import Correlation, stars
from gradprune.analysis.pipeline import Analysis

DPI = 150
STAR_KEY = "stars: BH-adjusted p < 0.05 *, < 0.01 **, < 0.001 ***"


def _figure(width: float, height: float):
    # margins are set by hand (in inches) below: constrained layout doubled the drawing time
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig


def _png(fig) -> bytes:
    thin_ticks(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    return buf.getvalue()


PAD_PX = 1.0  # tick labels closer than this (in pixels) count as touching


def _touching(fig, axis, labels: list, renderer) -> list[tuple[int, int]]:
    """Index pairs of tick labels that overlap when drawn. Slanted labels (heatmap names at 45°) are
    parallel lines of text: they touch when their distance across the text is below a line's height,
    which their upright bounding boxes, overlapping anyway, cannot tell."""
    boxes = [t.get_window_extent(renderer).padded(PAD_PX / 2) for t in labels]
    anchors = [t.get_transform().transform(t.get_position()) for t in labels]
    is_x = axis.axis_name == "x"
    out = []
    for i in range(len(labels)):
        for j in range(i + 1, len(labels)):
            rot = math.radians(labels[i].get_rotation() % 180)
            if labels[i].get_rotation() % 90 > 0:
                step = abs(anchors[i][0 if is_x else 1] - anchors[j][0 if is_x else 1])
                across = step * abs(math.sin(rot) if is_x else math.cos(rot))
                if across < labels[i].get_fontsize() * fig.dpi / 72 + PAD_PX:
                    out.append((i, j))
            elif boxes[i].overlaps(boxes[j]):
                out.append((i, j))
    return out


def overlapping_tick_labels(fig) -> list[tuple[str, str]]:
    """Pairs of tick labels of one axis that overlap when drawn (empty when every label reads alone)."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    found = []
    for ax in fig.axes:
        if not ax.get_visible():
            continue
        for axis in (ax.xaxis, ax.yaxis):
            labels = [t for t in axis.get_majorticklabels() if t.get_visible() and t.get_text()]
            found += [(labels[i].get_text(), labels[j].get_text()) for i, j in _touching(fig, axis, labels, renderer)]
    return found


def thin_ticks(fig, max_rounds: int = 5) -> None:
    """Drop every other tick of an axis whose tick labels overlap, until none do (raw values such as a
    pruning ratio varying in its 4th decimal, or a log axis at every grid level, make long labels)."""
    for _ in range(max_rounds):
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        crowded = False
        for ax in fig.axes:
            for axis in (ax.xaxis, ax.yaxis):
                labels = [t for t in axis.get_majorticklabels() if t.get_visible() and t.get_text()]
                if len(labels) >= 2 and _touching(fig, axis, labels, renderer):
                    locs = [t.get_position()[0 if axis is ax.xaxis else 1] for t in labels]
                    texts = [t.get_text() for t in labels]
                    axis.set_ticks(locs[::2], texts[::2])
                    crowded = True
        if not crowded:
            return


def _signed(v: float, digits: int = 2) -> str:
    return f"{v:+.{digits}f}".replace("-", "\u2212")  # a typographic minus reads better in print


def _label_inches(labels: Sequence[str], fontsize: float) -> float:
    return 0.6 * fontsize / 72 * max(len(t) for t in labels) + 0.15  # ~0.6 em per character


def heatmap_png(matrix: pd.DataFrame, title: str) -> bytes:
    """Annotated Spearman matrix, diverging colormap centred at 0 (grey cells: undefined)."""
    from matplotlib import colormaps

    names = list(matrix.columns)
    k = len(names)
    cell = 0.62 if k <= 10 else 0.55
    label = _label_inches(names, 9)
    left, bottom, top, right = label + 0.15, 0.71 * label + 0.25, 0.6, 1.25  # 45° labels: sin 45° ≈ 0.71
    side = k * cell
    width, height = max(left + side + right, 0.6 * 11 / 72 * len(title) + 0.6), bottom + side + top
    fig = _figure(width, height)
    ax = fig.add_axes((left / width, bottom / height, side / width, side / height))
    cax = fig.add_axes(((left + side + 0.25) / width, bottom / height, 0.22 / width, side / height))
    cmap = colormaps["RdBu_r"].with_extremes(bad="0.85")
    values = matrix.to_numpy(float)
    im = ax.imshow(np.ma.masked_invalid(values), cmap=cmap, vmin=-1, vmax=1, aspect="auto")
    ax.set_xticks(range(k), names, rotation=45, ha="right", rotation_mode="anchor", fontsize=9)
    ax.set_yticks(range(k), names, fontsize=9)
    size = 9 if k <= 10 else 8 if k <= 14 else 7
    for i in range(k):
        for j in range(k):
            v = values[i, j]
            text = "n/a" if not math.isfinite(v) else f"{round(v, 2) + 0.0:.2f}".replace("-", "\u2212")
            color = "white" if math.isfinite(v) and abs(v) > 0.6 else "black"
            ax.text(j, i, text, ha="center", va="center", fontsize=size, color=color)
    ax.set_xticks(np.arange(k + 1) - 0.5, minor=True)
    ax.set_yticks(np.arange(k + 1) - 0.5, minor=True)
    ax.grid(which="minor", color="white", linewidth=1)
    ax.tick_params(which="minor", length=0)
    fig.colorbar(im, cax=cax, label="Spearman \u03c1")
    fig.suptitle(title, fontsize=11, y=1 - 0.15 / height, va="top")
    return _png(fig)


@dataclass(frozen=True)
class Panel:
    """One feature against the target; ``means``/``sds`` (config-level, same columns) with replicates."""

    feature: str
    x: np.ndarray
    y: np.ndarray
    corr: Correlation
    means: tuple[np.ndarray, np.ndarray] | None = None  # (feature means, target means) per config
    sds: tuple[np.ndarray, np.ndarray] | None = None


def _trend(ax, x: np.ndarray, y: np.ndarray) -> None:
    ok = np.isfinite(x) & np.isfinite(y)
    if ok.sum() < 2 or np.ptp(x[ok]) == 0:
        return
    slope, icpt = np.polyfit(x[ok], y[ok], 1)
    xs = np.array([x[ok].min(), x[ok].max()])
    ax.plot(xs, icpt + slope * xs, color="C3", linewidth=1.5, label="least-squares line", zorder=4)


def _geometric(x: np.ndarray) -> bool:
    levels = np.unique(x[np.isfinite(x)])
    # grid values (16, 32, …, 256) only: a measured statistic that happens to have few rows keeps a linear
    # axis, or its ticks would sit at every raw value
    return (3 <= len(levels) <= 12 and levels[0] > 0 and levels[-1] / levels[0] >= 8
            and bool(np.all(levels == np.round(levels))))


def _draw_panel(ax, p: Panel, target: str, ylabel: bool) -> None:
    n = int((np.isfinite(p.x) & np.isfinite(p.y)).sum())
    if p.means is None:
        # plot() markers draw much faster than scatter() collections for hundreds of points
        ax.plot(p.x, p.y, "o", ms=3.6 if n < 200 else 2.2, alpha=0.75 if n < 200 else 0.3, mec="none", color="C0")
        _trend(ax, p.x, p.y)
    else:
        ax.plot(p.x, p.y, "o", ms=3, alpha=0.35, mec="none", color="0.45", label="replicate")
        (mx, my), (sx, sy) = p.means, p.sds
        many = len(mx) > 30  # with many configs, full-strength bars would hide everything else
        ax.errorbar(mx, my, xerr=np.nan_to_num(sx), yerr=np.nan_to_num(sy), fmt="o", ms=2.5 if many else 4,
                    color="C0", elinewidth=0.5 if many else 0.8, capsize=0 if many else 2,
                    alpha=0.45 if many else 1.0, label="config mean \u00b1 sd")
        _trend(ax, mx, my)
    c = p.corr
    if c.defined:
        title = (f"\u03c1 = {_signed(c.spearman)}{stars(c.spearman_p_adj)}   "
                 f"r = {_signed(c.pearson)}{stars(c.pearson_p_adj)}   n = {c.n}")
    else:
        title = c.undefined
    ax.set_title(title, fontsize=9)
    ax.set_xlabel(p.feature, fontsize=9)
    if _geometric(p.x):  # grid values like 16, 32, …, 256 are spaced evenly on a log axis
        levels = np.unique(p.x[np.isfinite(p.x)])
        ax.set_xscale("log", base=2)
        ax.set_xticks(levels, [f"{v:g}" for v in levels])
        ax.minorticks_off()
    else:
        finite = p.x[np.isfinite(p.x)]
        _readable_ticks(ax.xaxis, integer=bool(finite.size) and bool(np.all(finite == np.round(finite))))
    _readable_ticks(ax.yaxis)
    if ylabel:
        ax.set_ylabel(target, fontsize=9)
    ax.tick_params(labelsize=8)


def _readable_ticks(axis, integer: bool = False) -> None:
    """At most 4 ticks, with as many significant digits as the range needs and no offset text: a column that
    varies in its 4th decimal gets labels such as 2.9183, 2.9186, not "+2.918" and 0.0003."""
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    axis.set_major_locator(MaxNLocator(nbins=4, integer=integer))
    lo, hi = axis.get_view_interval()
    span = abs(hi - lo) or abs(hi) or 1.0
    scale = max(abs(lo), abs(hi)) or 1.0
    digits = min(10, max(2, int(math.ceil(math.log10(scale / span))) + 2))
    axis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:.{digits}g}".replace("-", "\u2212")))


def scatter_png(panels: Sequence[Panel], target: str, subtitle: str) -> bytes:
    """One panel per feature against the target, with a trend line and r / ρ (stars from adjusted p)."""
    cols = min(4, len(panels))
    rows = math.ceil(len(panels) / cols)
    legend = panels[0].means is not None
    top, bottom, left = 0.85, 0.55 + (0.35 if legend else 0.0), 0.8  # inches: suptitle, x labels, y label
    width, height = 3.4 * cols, 3.0 * rows + top + bottom - 0.3
    fig = _figure(width, height)
    fig.subplots_adjust(left=left / width, right=1 - 0.15 / width, top=1 - top / height, bottom=bottom / height,
                        wspace=0.3, hspace=0.55)
    axes = fig.subplots(rows, cols, squeeze=False)
    for k, ax in enumerate(axes.flat):
        if k >= len(panels):
            ax.set_visible(False)
            continue
        _draw_panel(ax, panels[k], target, ylabel=k % cols == 0)
    if legend:
        handles, labels = axes.flat[0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="lower center", ncols=len(labels), fontsize=8, frameon=False)
    fig.suptitle(f"{target} against each feature \u2014 {subtitle}\n{STAR_KEY}", fontsize=10, y=1 - 0.1 / height)
    return _png(fig)


SCATTER_MAX = 24  # panels in the scatter matrix (strongest |ρ| first); the report lists every feature


def scatter_correlations(a: Analysis) -> list[Correlation]:
    """The panels of the scatter matrix: the SCATTER_MAX strongest defined features (per-config means with
    replicates; their table is in column order, so it is sorted here)."""
    from gradprune.analysis.correlations import by_strength

    corrs = by_strength(a.replicates.between) if a.replicates is not None else a.target_corrs
    return [c for c in corrs if c.defined][:SCATTER_MAX]


def render_figures(a: Analysis) -> dict[str, bytes]:
    """correlation_heatmap.png and scatter_matrix.png of an analysis, as PNG bytes."""
    from gradprune.analysis.correlations import spearman_matrix

    heat = heatmap_png(spearman_matrix(a.heatmap_columns, a.pair_corrs),
                       f"Spearman correlation, n = {a.n} rows (target: {a.target})")
    data, t = a.roles.data, a.target
    rep = a.replicates
    chosen = scatter_correlations(a)
    panels = []
    for c in chosen:
        extra = {}
        if rep is not None:
            extra = {"means": (rep.means[c.x].to_numpy(), rep.means[t].to_numpy()),
                     "sds": (rep.sds[c.x].to_numpy(), rep.sds[t].to_numpy())}
        panels.append(Panel(c.x, data[c.x].to_numpy(float), data[t].to_numpy(float), c, **extra))
    subtitle = (f"{rep.target.groups} configs × replicates; ρ, r and the line from config means"
                if rep is not None else f"n = {a.n} rows")
    return {"correlation_heatmap.png": heat, "scatter_matrix.png": scatter_png(panels, t, subtitle)}
