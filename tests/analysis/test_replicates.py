"""Replicates: a planted setting effect gives a high ICC and a significant F; pure seed noise does not."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from gradprune.analysis.replicates import (
    analyze_replicates,
    config_labels,
    decompose,
    has_replicates,
    per_config_table,
    pooled_within,
    within_deviations,
)
from gradprune.prediction.columns import assign_roles


def _analyze(df: pd.DataFrame):
    roles = assign_roles(df, "acc_mean", "synthetic.csv")
    return analyze_replicates(roles.data, config_labels(df), "acc_mean", seed=0)


def test_planted_setting_effect_is_found(replicates):
    rep = _analyze(replicates(effect=0.05))
    assert rep.target.icc > 0.8
    assert rep.target.p < 1e-6
    between = {c.x: c for c in rep.between}
    assert between["taylor_seq_len"].spearman < -0.9 and between["taylor_seq_len"].significant


@pytest.mark.parametrize("seed", [3, 4, 5])
def test_pure_seed_noise_is_reported_as_noise(replicates, seed):
    rep = _analyze(replicates(effect=0.0, seed=seed))
    assert rep.target.icc < 0.3
    assert rep.target.p > 0.05


def test_icc_and_f_worked_by_hand_on_unbalanced_groups():
    # groups a: 1, 2, 3 (mean 2); b: 5, 7 (mean 6); grand mean 18/5 = 3.6
    values = np.array([1.0, 2, 3, 5, 7])
    groups = np.array(["a", "a", "a", "b", "b"])
    vd = decompose("y", values, groups)
    msb = 3 * (2 - 3.6) ** 2 + 2 * (6 - 3.6) ** 2  # 19.2 over 1 df
    msw = (1 + 0 + 1 + 1 + 1) / 3  # 4/3 over n − g = 3 df
    k0 = (5 - (9 + 4) / 5) / 1  # 2.4
    assert (vd.msb, vd.msw, vd.k0) == pytest.approx((msb, msw, k0))
    assert vd.icc_raw == pytest.approx((msb - msw) / (msb + (k0 - 1) * msw))
    ref = stats.f_oneway([1, 2, 3], [5, 7])
    assert (vd.f, vd.p) == pytest.approx((ref.statistic, ref.pvalue))
    assert vd.f == pytest.approx(msb / msw)


def test_negative_icc_is_clipped_for_reporting_but_kept_raw():
    # config means identical, all variation within: MSB = 0 < MSW
    vd = decompose("y", np.array([1.0, 3, 1, 3]), np.array([0, 0, 1, 1]))
    assert vd.icc_raw < 0 and vd.icc == 0.0


def test_no_within_variance_and_degenerate_cases():
    vd = decompose("s", np.array([16.0, 16, 32, 32]), np.array([0, 0, 1, 1]))
    assert vd.msw == 0 and vd.icc == 1.0
    assert np.isnan(decompose("y", np.array([1.0, 2.0]), np.array([0, 1])).icc_raw)  # one row per group


def test_detection_and_per_config_table(replicates):
    df = replicates(effect=0.05)
    assert has_replicates(df)
    assert not has_replicates(df.drop(columns="config_id"))
    assert not has_replicates(df.drop_duplicates("config_id"))
    table = per_config_table(df[["acc_mean", "grad_norm_ratio"]], config_labels(df))
    assert len(table) == 15 and (table["n"] == 3).all()
    first = df[df.config_id == 0]["acc_mean"]
    row = table.iloc[0]
    assert (row["acc_mean_mean"], row["acc_mean_sd"], row["acc_mean_n"]) == pytest.approx(
        (first.mean(), first.std(ddof=1), 3))


def test_within_deviations_and_pooled_correlation():
    rng = np.random.default_rng(0)
    groups = pd.Series(np.repeat(np.arange(10), 4).astype(str))
    offset = np.repeat(rng.normal(0, 5, 10), 4)  # big between-config differences, unrelated to x
    x = rng.normal(size=40)
    data = pd.DataFrame({"y": offset - 0.8 * x + rng.normal(0, 0.2, 40), "x": x + offset * 0.0,
                         "setting": np.repeat(np.arange(10.0) * 0.1, 4)})
    dev = within_deviations(data, groups)
    assert np.allclose(dev.groupby(groups).mean(), 0)
    assert (dev["setting"] == 0).all()  # constant within configs, rounding included
    c = pooled_within(dev, "y", "x", groups=10)
    assert c.pearson < -0.9 and c.pearson_p < 1e-6 and c.pearson_ci[0] < c.pearson < c.pearson_ci[1]
    df = 40 - 10 - 1
    t = abs(c.pearson) * np.sqrt(df / (1 - c.pearson ** 2))
    assert c.pearson_p == pytest.approx(2 * stats.t.sf(t, df))
    assert not pooled_within(dev, "y", "setting", groups=10).defined
