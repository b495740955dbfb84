"""The report's key findings: the variance sentence, the prediction claim, roles, monotone relations."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from gradprune.analysis.correlations import Correlation
from gradprune.analysis.findings import claims_prediction, monotone_sentence, role_sentence, variance_sentence
from gradprune.analysis.key_findings import key_findings
from gradprune.analysis.pipeline import run_analysis
from gradprune.analysis.replicates import VarianceDecomposition


def _vd(icc_raw: float, p: float) -> VarianceDecomposition:
    return VarianceDecomposition("acc_mean", 45, 15, 3.0, 1.0, 0.1, 10.0, p, icc_raw)


def test_variance_sentence_states_the_share_and_the_test():
    high = variance_sentence(_vd(0.9123, 1e-9), "acc_mean")
    assert high.startswith("ICC = 0.9123: 91.2 % of the variance of acc_mean is between settings")
    assert "calibration noise" in high and "The settings differ" in high
    small = variance_sentence(_vd(0.2, 0.01), "acc_mean")
    assert "small next to calibration noise" in small
    none = variance_sentence(_vd(-0.05, 0.6), "acc_mean")
    assert none.startswith("ICC = 0.0000 (raw estimate -0.0500, clipped at 0)")
    assert "no setting effect can be claimed" in none and "The settings differ" not in none


def _noise_csv(path, n: int, seed: int):
    """A search CSV in which nothing predicts acc_mean."""
    rng = np.random.default_rng(seed)
    pd.DataFrame({
        "trial": np.arange(n), "success": True,
        "taylor_seq_len": rng.choice([16, 32, 64, 128, 256], n), "taylor_num_samples": rng.choice([128, 256, 512], n),
        "grad_norm_ratio": rng.uniform(2, 40, n), "grad_mean_ratio": rng.uniform(1, 5, n),
        "grad_std_ratio": rng.uniform(1, 5, n), "grad_max_ratio": rng.uniform(1, 9, n),
        "extreme_pruning_layers": rng.integers(0, 4, n), "ppl": 20 + rng.normal(0, 1, n),
        "acc_mean": 0.6 + rng.normal(0, 0.01, n),
    }).to_csv(path, index=False)
    return path


@pytest.mark.slow
def test_pure_noise_rarely_claims_a_predictive_model(tmp_path):
    # before the nested CV and the permutation test, 48 of these 100 reports presented a predictor
    claims = 0
    for seed in range(100):
        a = run_analysis(_noise_csv(tmp_path / f"noise{seed}.csv", 15, 5000 + seed), "acc_mean", 0)
        findings = " ".join(key_findings(a))
        claims += "Predictive model:" in findings
        assert ("Predictive model:" in findings) == claims_prediction(a.role_scores["exported"])
    assert claims <= 5


def test_noise_report_says_no_better_than_chance(tmp_path):
    a = run_analysis(_noise_csv(tmp_path / "noise.csv", 15, 5003), "acc_mean", 0)
    rs = a.role_scores["exported"]
    assert rs.p_value >= 0.05
    findings = " ".join(key_findings(a))
    assert "The prediction model is no better than chance" in findings and "Predictive model:" not in findings
    assert "strong:" not in findings  # no size word for a correlation that is not significant
    assert a.model.metrics.permutation_p == rs.p_value and a.model.metrics.r2_cv_nested == rs.r2_cv_nested


def test_roles_are_compared_and_ppl_is_not_a_feature(planted, tmp_path):
    df = planted(n=30)
    rng = np.random.default_rng(11)
    df["proxy_loss"] = 3.0 + 20 * (0.70 - df["acc_mean"]) + rng.normal(0, 0.005, 30)  # a good proxy
    df["grad_norm_ratio"] = rng.uniform(2, 40, 30)  # the statistics are nulls here
    path = tmp_path / "roles.csv"
    df.to_csv(path, index=False)
    a = run_analysis(path, "acc_mean", 0)
    assert "ppl" in a.roles.evaluation and "ppl" not in a.roles.features
    assert set(a.role_scores) == {"exported", "settings", "statistics", "proxies", "statistics + settings"}
    assert a.role_scores["proxies"].p_value < 0.05 and a.role_scores["proxies"].r2_cv_nested > 0.8
    assert "proxy_loss" not in a.model.features  # the exported model uses settings and statistics only
    assert role_sentence(a).startswith("The post-pruning proxies predict acc_mean best")


def test_anova_sentence_defers_to_a_significant_trend():
    trend = Correlation("taylor_seq_len", "acc_mean", 15, -0.8, 0.001, -0.7, 0.003, 0.004, 0.01)
    text = variance_sentence(_vd(0.3, 0.2), "acc_mean", [trend])
    assert "no setting effect can be claimed" not in text and "a trend along a setting parameter does" in text


def test_monotone_but_not_linear_is_said():
    bent = Correlation("grad_norm_ratio", "acc_mean", 30, -0.92, 1e-4, -0.77, 1e-3, 1e-3, 2e-3)
    straight = Correlation("grad_max_ratio", "acc_mean", 30, -0.80, 1e-4, -0.79, 1e-3, 1e-3, 2e-3)
    text = monotone_sentence([bent, straight], "acc_mean")
    assert text.startswith("Monotone but not linear: grad_norm_ratio: Spearman ρ = -0.9200, Pearson r = -0.7700")
    assert "grad_max_ratio" not in text and monotone_sentence([straight], "acc_mean") is None


def test_a_role_above_the_exported_choice_is_explained():
    # as seen: headline "no better than chance (nested R² −0.07)" beside "statistics: nested R² 0.72, p 0.07"
    from types import SimpleNamespace

    from gradprune.analysis.findings import exported_gap_sentence

    def rs(r2, p):
        return SimpleNamespace(r2_cv_nested=r2, p_value=p)

    a = SimpleNamespace(role_scores={"exported": rs(-0.07, 0.4), "settings": rs(0.1, 0.5), "statistics": rs(0.72, 0.07)},
                        comparison=SimpleNamespace(scores=[None] * 12))
    text = exported_gap_sentence(a)
    assert "nested R² (-0.0700) is below the statistics role's (0.7200)" in text
    assert "all 12 candidates inside every fold" in text and "neither is better than chance" in text
    a.role_scores.update(statistics=rs(0.0, 0.5), settings=rs(-0.05, 0.6))
    assert exported_gap_sentence(a) is None  # within 0.1 of the exported choice: nothing to explain
