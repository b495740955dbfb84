"""The vectorised bootstrap equals scipy resample by resample."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from gradprune.analysis.bootstrap import _draws, _resampled_ranks, bootstrap_cis


def test_ranks_within_resamples_equal_scipy_with_ties():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 6, 40).astype(float)  # many ties, and more inside each resample
    idx = rng.integers(0, 40, (25, 40))
    codes = np.unique(x, return_inverse=True)[1]
    assert np.array_equal(_resampled_ranks(codes, idx), stats.rankdata(x[idx], axis=1))


def test_draws_equal_scipy_per_resample():
    rng = np.random.default_rng(1)
    x = rng.integers(0, 5, 30).astype(float)
    y = x + rng.normal(0, 1, 30)
    idx = rng.integers(0, 30, (15, 30))
    sp, pe = _draws({"x": x, "y": y}, [("x", "y")], idx)
    for b in range(15):
        assert sp[b, 0] == pytest.approx(stats.spearmanr(x[idx[b]], y[idx[b]]).statistic, abs=1e-12)
        assert pe[b, 0] == pytest.approx(stats.pearsonr(x[idx[b]], y[idx[b]]).statistic, abs=1e-12)


def test_constant_resamples_do_not_give_numbers():
    x = np.array([0.0, 0.0, 0.0, 1.0])
    y = np.array([1.0, 2.0, 3.0, 4.0])
    ci = bootstrap_cis({"x": x, "y": y}, [("x", "y")], seed=0, n_resamples=400)[("x", "y")]
    lo, hi = ci.spearman
    assert (np.isnan(lo) and np.isnan(hi)) or -1 <= lo <= hi <= 1


def test_interval_covers_the_estimate_for_a_clear_relation():
    rng = np.random.default_rng(3)
    x = rng.normal(size=200)
    y = 0.5 * x + rng.normal(size=200)
    ci = bootstrap_cis({"x": x, "y": y}, [("x", "y")], seed=0)[("x", "y")]
    r = stats.pearsonr(x, y).statistic
    assert ci.pearson[0] < r < ci.pearson[1]
    assert ci.pearson[1] - ci.pearson[0] == pytest.approx(2 * 1.96 * (1 - r * r) / np.sqrt(200), rel=0.3)
