"""Figures render to PNG, undefined cells included, with and without replicates."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd

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
