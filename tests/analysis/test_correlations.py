"""Correlations: planted relations recovered, coefficients equal scipy's, BH equals a reference."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from gradprune.analysis.correlations import (
    all_pairs,
    bh_adjust,
    correlate,
    correlate_families,
    correlations_frame,
    spearman_matrix,
    stars,
    strength,
    target_pairs,
)


def reference_bh(p):
    """Benjamini–Hochberg step-up, written out: p_(i)·m/i, cumulative minimum from the largest, ≤ 1."""
    p = np.asarray(p, float)
    m = len(p)
    order = np.argsort(p)
    adj = np.empty(m)
    running = 1.0
    for rank in range(m, 0, -1):
        i = order[rank - 1]
        running = min(running, p[i] * m / rank)
        adj[i] = running
    return adj


def test_bh_worked_by_hand():
    # sorted 0.01, 0.03, 0.04, 0.20 → 0.04, 0.06, 0.0533, 0.20 → running minimum from the end
    assert bh_adjust([0.01, 0.04, 0.03, 0.20]) == pytest.approx([0.04, 0.16 / 3, 0.16 / 3, 0.20])


@pytest.mark.parametrize("seed", range(5))
def test_bh_equals_reference(seed):
    p = np.random.default_rng(seed).uniform(0, 0.2, 17) ** 2
    assert bh_adjust(p) == pytest.approx(reference_bh(p))


def test_bh_ignores_nan():
    out = bh_adjust([0.01, float("nan"), 0.04])
    assert np.isnan(out[1])
    assert out[[0, 2]] == pytest.approx(reference_bh([0.01, 0.04]))


def test_planted_relation_and_null_recovered():
    rng = np.random.default_rng(0)  # (a null is significant 1 time in 20: seed 1 is such a draw)
    n = 40
    x = rng.uniform(0, 1, n)
    data = pd.DataFrame({"y": np.exp(-3 * x) + rng.normal(0, 0.02, n), "x": x, "null": rng.normal(size=n)})
    corrs = {c.x: c for c in correlate_families(data, {"t": target_pairs("y", ["x", "null"])}, seed=0)["t"]}
    planted, null = corrs["x"], corrs["null"]
    assert planted.spearman < -0.9 and planted.significant
    assert planted.spearman_ci[0] < planted.spearman < planted.spearman_ci[1] < 0
    assert not null.significant and null.spearman_ci[0] < 0 < null.spearman_ci[1]


def test_coefficients_equal_scipy(planted_csv):
    df = pd.read_csv(planted_csv)
    data = df[["acc_mean", "grad_norm_ratio", "ppl", "taylor_seq_len"]].astype(float)
    out = correlate_families(data, {"t": target_pairs("acc_mean", ["grad_norm_ratio", "ppl", "taylor_seq_len"])},
                             seed=0, n_resamples=200)["t"]
    for c in out:
        # n = 30: Monte Carlo permutation p-values; scipy's own permutation method agrees within MC error
        method = stats.PermutationMethod(n_resamples=4999, rng=np.random.default_rng(1))
        s = stats.spearmanr(df[c.x], df.acc_mean)
        p = stats.pearsonr(df[c.x], df.acc_mean, method=method)
        assert c.spearman == pytest.approx(s.statistic, rel=1e-12) and c.pearson == pytest.approx(p.statistic, rel=1e-12)
        ref_s = stats.permutation_test((stats.rankdata(df[c.x]),), lambda a: stats.spearmanr(a, df.acc_mean).statistic,
                                       permutation_type="pairings", n_resamples=2999, rng=np.random.default_rng(2)).pvalue
        # two-sided MC p of 2000 draws: sd ≤ 0.022 each; 0.08 is about 2.5 sd of the difference
        assert c.spearman_p == pytest.approx(ref_s, abs=0.08) and c.pearson_p == pytest.approx(p.pvalue, abs=0.08)
        assert c.spearman_p >= 1 / 2000 and c.pearson_p >= 1 / 2000
        assert c.n == len(df)
    assert [c.spearman_p_adj for c in out] == pytest.approx(reference_bh([c.spearman_p for c in out]))


def test_pairwise_nan_uses_shared_rows_and_keeps_ci():
    rng = np.random.default_rng(2)
    x = rng.normal(size=30)
    y = x + rng.normal(0, 0.3, 30)
    x_gaps = x.copy()
    x_gaps[:5] = np.nan
    data = pd.DataFrame({"y": y, "x": x_gaps})
    (c,) = correlate_families(data, {"t": [("x", "y")]}, seed=0, n_resamples=300)["t"]
    assert c.n == 25
    assert c.spearman == pytest.approx(stats.spearmanr(x[5:], y[5:]).statistic)
    assert c.spearman_ci[0] < c.spearman < c.spearman_ci[1]


def test_constant_and_tiny_inputs_are_undefined_not_nan_findings():
    c = correlate("k", "y", np.ones(10), np.arange(10.0))
    assert not c.defined and c.undefined == "undefined (constant)" and not c.significant
    assert not correlate("a", "b", np.array([1.0, 2.0]), np.array([2.0, 1.0])).defined
    frame = correlations_frame("target", [c])
    assert frame.loc[0, "note"] == "undefined (constant)"


def test_bootstrap_ci_is_seeded():
    data = pd.DataFrame({"a": np.arange(20.0), "b": np.sin(np.arange(20.0))})
    one = correlate_families(data, {"t": [("a", "b")]}, seed=5, n_resamples=100)["t"][0]
    two = correlate_families(data, {"t": [("a", "b")]}, seed=5, n_resamples=100)["t"][0]
    other = correlate_families(data, {"t": [("a", "b")]}, seed=6, n_resamples=100)["t"][0]
    assert one.spearman_ci == two.spearman_ci != other.spearman_ci


def test_matrix_and_labels():
    data = pd.DataFrame({"a": [1.0, 2, 3, 4], "b": [1.0, 3, 2, 4], "c": [4.0, 3, 2, 1]})
    pairs = correlate_families(data, {"p": all_pairs(["a", "b", "c"])}, seed=0, n_resamples=50)["p"]
    m = spearman_matrix(["a", "b", "c"], pairs)
    assert m.loc["a", "c"] == pytest.approx(-1.0) and m.loc["c", "a"] == pytest.approx(-1.0)
    assert m.loc["b", "b"] == 1.0
    assert stars(0.0004) == "***" and stars(0.004) == "**" and stars(0.04) == "*" and stars(0.2) == ""
    assert strength(-0.05) == "negligible" and strength(0.6) == "strong"


def test_small_n_uses_exact_permutation_p_values():
    # four points in perfect order: the t approximation says p = 0; only 2 of the 4! pairings are as extreme
    c = correlate("g", "acc", np.array([1.0, 2, 3, 4]), np.array([0.6, 0.58, 0.57, 0.5]))
    assert c.spearman == -1.0 and c.spearman_p == pytest.approx(2 / 24)
    rng = np.random.default_rng(4)
    x, y = rng.normal(size=7), rng.normal(size=7)
    y[3] = y[5]  # a tie in the ranks
    c = correlate("x", "y", x, y)
    ref_p = stats.permutation_test((x,), lambda a: stats.pearsonr(a, y).statistic, permutation_type="pairings",
                                   n_resamples=np.inf).pvalue
    ref_s = stats.permutation_test((x,), lambda a: stats.spearmanr(a, y).statistic, permutation_type="pairings",
                                   n_resamples=np.inf).pvalue
    assert (c.pearson_p, c.spearman_p) == pytest.approx((ref_p, ref_s))
    assert c.spearman == pytest.approx(stats.spearmanr(x, y).statistic)


def test_p_values_never_below_what_a_permutation_test_resolves():
    # ρ = −1 at n = 12: the t approximation says p = 0 ("< 1e-16"); 2 of 12! pairings are as extreme
    from gradprune.analysis.document import fmt_p

    x = np.arange(12.0)
    c = correlate("g", "acc", x, -(x ** 2))
    assert stats.spearmanr(x, -(x ** 2)).pvalue < 1e-16
    assert c.spearman == -1.0 and c.spearman_p >= 2 / 12 / 11 / 10 / 9 / 8 / 7 / 6 / 5 / 4 / 3 / 2
    assert c.spearman_p == pytest.approx(2 / 2000) and fmt_p(c.spearman_p) != "< 1e-16"


def test_near_duplicates_are_one_test_in_the_bh_correction(planted, make_csv):
    from gradprune.analysis.pipeline import run_analysis

    df = planted(n=30)
    df["grad_std_ratio"] = df["grad_norm_ratio"] + 1e-7  # 2.9187727 against 2.9187728: the same ordering
    a = run_analysis(make_csv(df), "acc_mean", 0)
    tested = [c for c in a.target_corrs if c.defined]
    assert "grad_std_ratio" not in {c.x for c in tested} and "grad_norm_ratio" in {c.x for c in tested}
    assert [c.spearman_p_adj for c in tested] == pytest.approx(
        stats.false_discovery_control([c.spearman_p for c in tested], method="bh"))
    assert any("grad_norm_ratio and grad_std_ratio order the rows the same way" in n for n in a.notes)


def _acceptance_frame():
    """15 settings; acc_mean falls with grad_norm_ratio."""
    rng = np.random.default_rng(5)
    rows = []
    for i, (s, k) in enumerate([(s, k) for s in (16, 32, 64, 128, 256) for k in (128, 256, 512)]):
        g = rng.uniform(2, 20)
        rows.append(dict(trial=i, success=True, taylor_seq_len=s, taylor_num_samples=k, grad_norm_ratio=g,
                         grad_mean_ratio=rng.uniform(1, 30), grad_std_ratio=rng.uniform(1, 5),
                         grad_max_ratio=rng.uniform(1, 5), extreme_pruning_layers=int(rng.integers(0, 3)),
                         ppl=rng.uniform(10, 30), pruning_ratio=0.2, acc_mean=0.6 - 0.01 * g + rng.normal(0, 0.01)))
    return pd.DataFrame(rows)


def test_empty_cells_in_one_statistic_keep_it_and_merge_nothing_into_it(make_csv):
    from gradprune.analysis.pipeline import run_analysis

    df = _acceptance_frame()
    df.loc[[2, 9], "grad_norm_ratio"] = None
    a = run_analysis(make_csv(df), "acc_mean", 0)
    tested = {c.x: c for c in a.target_corrs if c.defined}
    assert tested["grad_norm_ratio"].n == 13 and tested["grad_norm_ratio"].spearman < -0.8
    assert a.roles.near_duplicates == {}  # unrelated columns are not merged into its group
    assert any("grad_norm_ratio is missing in 13% of the rows" in n for n in a.notes)  # why it is not fitted


def test_an_extra_numeric_column_is_listed_as_ignored_not_tested(make_csv):
    from gradprune.analysis.pipeline import run_analysis

    df = _acceptance_frame().assign(note_id=range(15))
    a = run_analysis(make_csv(df), "acc_mean", 0)
    assert "note_id" not in {c.x for c in a.target_corrs} and "note_id" not in a.model.features
    assert any("ignored: note_id" in n and "--include note_id" in n for n in a.notes)
    plain = run_analysis(make_csv(_acceptance_frame(), "plain.csv"), "acc_mean", 0)
    # the p-values of the other features are those of the CSV without the column
    assert [c.spearman_p_adj for c in a.target_corrs] == pytest.approx(
        [c.spearman_p_adj for c in plain.target_corrs], nan_ok=True)
    assert a.model.metrics.permutation_p == plain.model.metrics.permutation_p
