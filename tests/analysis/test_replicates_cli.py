"""Replicates end to end: per_config.csv, ICC in the key findings, and no setting claim for pure noise."""

from __future__ import annotations

import json
import re

import pandas as pd
import pytest

from gradprune.cli import main


@pytest.fixture(scope="module")
def runs(tmp_path_factory, replicates):
    out = {}
    for name, effect in (("planted", 0.05), ("noise", 0.0)):
        d = tmp_path_factory.mktemp(name)
        replicates(effect).to_csv(d / "search_results.csv", index=False)
        assert main(["analyze", str(d / "search_results.csv")]) == 0
        out[name] = d
    return out


def _icc(text: str) -> float:
    first = re.search(r"(?i)(icc|intraclass[a-z ]*)[^0-9-]{0,40}(-?[0-9]+\.[0-9]+)", text)
    return float(first.group(2))


def test_planted_effect(runs):
    d = runs["planted"]
    text = (d / "correlation_report.txt").read_text()
    findings = text.split("KEY FINDINGS")[1].split("HYPOTHESES")[0]
    assert "ICC = 0." in findings and _icc(text) > 0.8
    assert "of the variance of acc_mean is between settings" in findings
    assert "The settings differ (one-way ANOVA" in findings
    per_config = pd.read_csv(d / "per_config.csv")
    assert len(per_config) == 15 and {"acc_mean_mean", "acc_mean_sd", "acc_mean_n"} <= set(per_config.columns)
    scopes = set(pd.read_csv(d / "correlations.csv").scope)
    assert scopes == {"target", "heatmap_pairs", "config_means", "within_config"}
    model = json.loads((d / "prediction_model.json").read_text())
    assert model["metrics"]["cv"] == "10-fold by config" and model["n_configs"] == 15
    assert model["metrics"]["permutation_p"] < 0.05 and model["metrics"]["r2_cv_nested"] > 0.5
    assert "Tested on per-config means" in text


def test_pure_noise_makes_no_setting_claim(runs):
    text = (runs["noise"] / "correlation_report.txt").read_text()
    assert _icc(text) < 0.3
    assert "no setting effect can be claimed" in text
    assert "The settings differ" not in text and "setting effect dominates" not in text
    findings = " ".join(text.split("KEY FINDINGS")[1].split("HYPOTHESES")[0].split())
    assert "The prediction model is no better than chance" in findings
    assert "whole configs' targets shuffled" in findings


def test_scatter_has_config_means(runs):
    png = (runs["planted"] / "scatter_matrix.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 50_000


def test_best_settings_csv(runs, replicates):
    from scipy import stats

    df = replicates(0.05)
    table = pd.read_csv(runs["planted"] / "best_settings.csv")
    assert len(table) == 15 and list(table["rank"]) == list(range(1, 16))
    assert table["mean"].is_monotonic_decreasing
    means = df.groupby("config_id").acc_mean.agg(["mean", "std", "count"])
    top = table.iloc[0]
    ref = means.loc[int(top.config_id)]
    assert (top["mean"], top["sd"], top["n"]) == pytest.approx((ref["mean"], ref["std"], ref["count"]))
    lo, hi = stats.t.interval(0.95, 2, loc=ref["mean"], scale=ref["std"] / 3 ** 0.5)
    assert (top.ci_low, top.ci_high) == pytest.approx((lo, hi))
    assert means["mean"].idxmax() == int(top.config_id)
    welch = stats.ttest_ind(df.acc_mean[df.config_id == top.config_id],
                            df.acc_mean[df.config_id == table.iloc[1].config_id], equal_var=False).pvalue
    findings = " ".join((runs["planted"] / "correlation_report.txt").read_text().split())
    assert f"Welch t-test p = {welch:.4f}" in findings
    assert "not distinguishable from the runner-up" in findings  # the three 16-token configs tie
