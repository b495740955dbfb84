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
