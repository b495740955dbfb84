"""The paper's figures as PDF (vector: markers, lines and heatmap cells are paths, no embedded image),
sized for one column (3.3 in) and two columns (7 in), every font at least 7 pt at that size, no
overlapping tick labels."""

from __future__ import annotations

import io
import math

import numpy as np

from gradprune.analysis.correlations import Correlation, spearman_matrix, stars
from gradprune.analysis.figures import _figure, _geometric, _readable_ticks, _signed, thin_ticks
from gradprune.analysis.pipeline import Analysis

ONE_COLUMN, TWO_COLUMNS = 3.3, 7.0  # inches
FONT, SMALL = 8.0, 7.0  # pt: labels and titles; ticks, legends and cell annotations
MIN_CELL = 0.34  # in: a heatmap cell that holds "−0.85" at SMALL pt
MAX_PANELS = {ONE_COLUMN: 1, TWO_COLUMNS: 4}


def _pdf(fig) -> bytes:
    thin_ticks(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="pdf", metadata={"CreationDate": None, "Creator": "gradprune"})
    return buf.getvalue()


def _scatter_corrs(a: Analysis) -> list[Correlation]:
    from gradprune.analysis.figures import scatter_correlations

    if a.within is None:
        return scatter_correlations(a)
    pooled = [c for c in a.within.pooled if c.defined]  # the within-level relation is the finding
    return sorted(pooled, key=lambda c: -abs(c.spearman))


def scatter_pdf(a: Analysis, width: float) -> bytes:
    """:func:`scatter_figure` as PDF."""
    return _pdf(scatter_figure(a, width))


def heatmap_pdf(a: Analysis, width: float) -> bytes:
    """:func:`heatmap_figure` as PDF."""
    return _pdf(heatmap_figure(a, width))


def scatter_figure(a: Analysis, width: float):
    """The strongest features against the target (one panel at one column, up to four at two); split by a
    grouping, one colour and one least-squares line per level, and ρ within a level in the title."""
    corrs = _scatter_corrs(a)[:MAX_PANELS[width]] or [a.target_corrs[0]]
    k = len(corrs)
    left, right, bottom, top = 0.5, 0.08, 0.42 + (0.22 if a.within is not None else 0.0), 0.25
    panel_w = (width - left - right - 0.35 * (k - 1)) / k
    height = bottom + top + min(2.2, max(1.6, panel_w * 0.85))
    fig = _figure(width, height)
    fig.subplots_adjust(left=left / width, right=1 - right / width, bottom=bottom / height, top=1 - top / height,
                        wspace=0.35 / panel_w)
    axes = fig.subplots(1, k, squeeze=False)[0]
    data, t = a.roles.data, a.target
    labels = a.within.grouping.labels if a.within is not None else None
    for ax, c in zip(axes, corrs, strict=True):
        x, y = data[c.x].to_numpy(float), data[t].to_numpy(float)
        groups = [(None, np.ones(len(x), bool))] if labels is None else \
            [(lv, (labels == lv).to_numpy()) for lv in a.within.grouping.levels]
        for i, (lv, sel) in enumerate(groups):
            color = f"C{i % 10}"
            ax.plot(x[sel], y[sel], "o", ms=2.6, alpha=0.8, mec="none", color=color,
                    label=None if lv is None else f"{a.within.grouping.column} = {lv}")
            ok = sel & np.isfinite(x) & np.isfinite(y)
            if ok.sum() >= 2 and np.ptp(x[ok]) > 0:
                slope, icpt = np.polyfit(x[ok], y[ok], 1)
                xs = np.array([x[ok].min(), x[ok].max()])
                ax.plot(xs, icpt + slope * xs, color=color if lv is not None else "C3", linewidth=1.0)
        scope = "within" if a.within is not None else ""
        ax.set_title(f"{scope} \u03c1 = {_signed(c.spearman)}{stars(c.spearman_p_adj)}, n = {c.n}".strip(),
                     fontsize=SMALL)
        ax.set_xlabel(c.x, fontsize=FONT)
        if _geometric(x):
            levels = np.unique(x[np.isfinite(x)])
            ax.set_xscale("log", base=2)
            ax.set_xticks(levels, [f"{v:g}" for v in levels])
            ax.minorticks_off()
        else:
            _readable_ticks(ax.xaxis)
        _readable_ticks(ax.yaxis)
        ax.tick_params(labelsize=SMALL, length=2.5, pad=2)
    axes[0].set_ylabel(t, fontsize=FONT)
    if labels is not None:
        handles, names = axes[0].get_legend_handles_labels()
        fig.legend(handles, names, loc="lower center", ncols=min(len(names), 4 if width > 4 else 2),
                   fontsize=SMALL, frameon=False, handletextpad=0.2, columnspacing=0.8)
    return fig


def heatmap_figure(a: Analysis, width: float):
    """The Spearman matrix of the target and the features most correlated with it (as many as fit the width
    with readable cells), drawn as vector cells."""
    from matplotlib import colormaps

    label = 0.6 * SMALL / 72 * max(len(c) for c in a.heatmap_columns) + 0.1
    fits = int((width - label - 0.75) // MIN_CELL)
    columns = a.heatmap_columns[:max(2, min(len(a.heatmap_columns), fits))]
    matrix = spearman_matrix(columns, a.pair_corrs).to_numpy(float)
    k = len(columns)
    cell = min(0.5, (width - label - 0.75) / k)
    side = k * cell
    height = side + 0.71 * label + 0.2
    fig = _figure(width, height)
    ax = fig.add_axes((label / width, (0.71 * label + 0.1) / height, side / width, side / height))
    cax = fig.add_axes(((label + side + 0.12) / width, (0.71 * label + 0.1) / height, 0.12 / width, side / height))
    cmap = colormaps["RdBu_r"].with_extremes(bad="0.85")
    mesh = ax.pcolormesh(np.ma.masked_invalid(matrix), cmap=cmap, vmin=-1, vmax=1, edgecolors="white", linewidth=0.5)
    ax.set_xlim(0, k)
    ax.set_ylim(k, 0)
    ax.set_xticks(np.arange(k) + 0.5, columns, rotation=45, ha="right", rotation_mode="anchor", fontsize=SMALL)
    ax.set_yticks(np.arange(k) + 0.5, columns, fontsize=SMALL)
    ax.tick_params(length=0, pad=2)
    for i in range(k):
        for j in range(k):
            v = matrix[i, j]
            text = "n/a" if not math.isfinite(v) else f"{round(v, 2) + 0.0:.2f}".replace("-", "\u2212")
            ax.text(j + 0.5, i + 0.5, text, ha="center", va="center", fontsize=SMALL,
                    color="white" if math.isfinite(v) and abs(v) > 0.6 else "black")
    bar = fig.colorbar(mesh, cax=cax)
    bar.solids.set_rasterized(False)  # matplotlib rasterizes a colour bar of many colours: keep it vector
    bar.ax.tick_params(labelsize=SMALL)
    bar.set_label("Spearman \u03c1", fontsize=SMALL)
    return fig


def paper_figures(a: Analysis) -> dict[str, bytes]:
    """figures/<name>_1col.pdf and _2col.pdf of the scatter and the heatmap."""
    out = {}
    for suffix, width in (("1col", ONE_COLUMN), ("2col", TWO_COLUMNS)):
        out[f"figures/scatter_{suffix}.pdf"] = scatter_pdf(a, width)
        out[f"figures/heatmap_{suffix}.pdf"] = heatmap_pdf(a, width)
    return out
