"""Figures render to PNG, undefined cells included, with and without replicates."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd

from gradprune.analysis import figures
from gradprune.analysis.correlations import Correlation
from gradprune.analysis.figures import Panel, heatmap_png, scatter_png


def _size(png: bytes) -> tuple[int, int]:
    from matplotlib.image import imread

    return imread(io.BytesIO(png), format="png").shape[:2]


def test_heatmap_with_undefined_cells():
    names = ["acc_mean", "grad_norm_ratio", "a_much_longer_dotted.grid_key_name"]
    m = pd.DataFrame(np.eye(3), index=names, columns=names)
    m.iloc[0, 1] = m.iloc[1, 0] = -0.8
    m.iloc[0, 2] = m.iloc[2, 0] = np.nan
    png = heatmap_png(m, "Spearman")
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    h, w = _size(png)
    assert w > 800 and h > 600  # a long label widens the margins instead of being cut


def test_scatter_panels_with_and_without_replicates():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=30), rng.normal(size=30)
    c = Correlation("x", "acc_mean", 30, -0.5, 0.01, -0.4, 0.02, 0.02, 0.04)
    flat = scatter_png([Panel("x", x, y, c), Panel("k", np.ones(30), y, Correlation("k", "acc_mean", 30,
                                                                                     undefined="undefined (constant)"))],
                       "acc_mean", "n = 30")
    means = (np.array([0.0, 1.0]), np.array([0.5, 0.6]))
    sds = (np.array([0.1, np.nan]), np.array([0.01, 0.02]))
    rep = scatter_png([Panel("x", x, y, c, means, sds)], "acc_mean", "2 configs")
    assert flat[:4] == rep[:4] == b"\x89PNG"


def test_scatter_with_replicates_shows_the_strongest_first(replicates, tmp_path, monkeypatch):
    from scipy import stats

    from gradprune.analysis.pipeline import run_analysis

    df = replicates(0.05)
    df = df[[c for c in df.columns if c != "taylor_seq_len"] + ["taylor_seq_len"]]  # the planted one last
    df.to_csv(tmp_path / "r.csv", index=False)
    monkeypatch.setattr(figures, "SCATTER_MAX", 2)
    shown = [c.x for c in figures.scatter_correlations(run_analysis(tmp_path / "r.csv", "acc_mean", 0))]
    means = df.groupby("config_id").mean()
    ref = sorted((c for c in means.columns if c not in ("acc_mean", "seed", "ppl") and means[c].nunique() > 1),
                 key=lambda c: -abs(stats.spearmanr(means[c], means.acc_mean).statistic))
    assert shown == ref[:2] and shown[0] == "taylor_seq_len"


def test_ticks_of_a_column_varying_in_the_4th_decimal_are_distinct():
    from matplotlib.figure import Figure

    fig = Figure()
    ax = fig.subplots()
    ax.plot([2.91877, 2.91881, 2.91912], [0.6, 0.61, 0.62], "o")
    figures._readable_ticks(ax.xaxis)
    labels = [figures_label(ax, t) for t in ax.get_xticks()]
    assert len(set(labels)) == len(labels) and all(lbl.startswith("2.91") for lbl in labels)
    assert ax.xaxis.get_offset_text().get_text() == ""


def figures_label(ax, value):
    return ax.xaxis.get_major_formatter()(value, 0)


def _panel_figure(x: np.ndarray, name: str):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    y = 0.6 - 0.001 * np.arange(len(x))
    fig = Figure(figsize=(3.4, 3.0))
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    c = Correlation(name, "acc_mean", len(x), -0.5, 0.1, -0.5, 0.1, 0.1, 0.1)
    figures._draw_panel(ax, Panel(name, x, y, c), "acc_mean", ylabel=True)
    return fig, ax


def test_a_measured_statistic_with_few_rows_keeps_a_linear_axis_and_ticks_never_overlap():
    # grad_mean_ratio of 9 rows spanning 1.7 … 18.6: before, a log axis with a tick at every raw value
    x = np.array([1.7, 2.31, 3.05, 4.4, 6.18, 8.9, 11.27, 15.5, 18.6])
    fig, ax = _panel_figure(x, "grad_mean_ratio")
    assert ax.get_xscale() == "linear" and len(ax.get_xticks()) <= 6
    figures.thin_ticks(fig)
    assert figures.overlapping_tick_labels(fig) == []


def test_long_tick_labels_are_thinned_until_none_overlap():
    # an achieved pruning ratio varying in its 5th decimal: long labels on a narrow panel
    x = np.array([0.200013, 0.200031, 0.200052, 0.200077, 0.200091, 0.200104])
    fig, ax = _panel_figure(x, "pruning_ratio")
    ax.set_xticks(x, [f"{v:.6f}" for v in x])  # one label per raw value: they overlap
    assert figures.overlapping_tick_labels(fig) != []
    figures.thin_ticks(fig)
    assert figures.overlapping_tick_labels(fig) == [] and len(ax.get_xticks()) >= 1


def test_grid_values_keep_their_log_axis():
    x = np.array([16, 32, 64, 128, 256, 16, 32, 64, 128, 256], dtype=float)
    fig, ax = _panel_figure(x, "taylor_seq_len")
    assert ax.get_xscale() == "log"
    figures.thin_ticks(fig)
    assert figures.overlapping_tick_labels(fig) == []
