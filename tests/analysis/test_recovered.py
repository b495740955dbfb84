"""Untuned against recovered accuracy in the analysis: both targets on the same rows, side by side."""

from __future__ import annotations

import numpy as np
import pytest

from gradprune.analysis.loading import load_search_rows
from gradprune.analysis.recovered import compare_untuned_recovered, counterpart
from gradprune.cli import main
from tests.analysis.conftest import planted_frame

N = 20


def _with_recovered(seed: int = 11):
    """The planted frame (acc_mean falls with grad_norm_ratio) plus a recovered accuracy that recovery made
    independent of the statistics, and the recovery's own numbers."""
    df = planted_frame(N)
    rng = np.random.default_rng(seed)
    df["acc_mean_recovered"] = 0.72 + rng.normal(0, 0.01, len(df))
    df["ppl_recovered"] = 15 + rng.normal(0, 1, len(df))
    df["recovery_loss_final"] = 1.2 + rng.normal(0, 0.05, len(df))
    df["proxy_kl"] = 0.1 + 0.002 * df["grad_norm_ratio"] + rng.normal(0, 0.01, len(df))
    return df


def test_counterpart_names_the_pair_from_either_side(make_csv):
    cols = ["acc_mean", "acc_mean_recovered", "ppl"]
    assert counterpart("acc_mean", cols) == counterpart("acc_mean_recovered", cols) == ("acc_mean",
                                                                                        "acc_mean_recovered")
    assert counterpart("ppl", cols) is None
    plain = make_csv(planted_frame(N))
    assert compare_untuned_recovered(load_search_rows(plain, "acc_mean"), "acc_mean", seed=0) is None


@pytest.fixture(scope="module")
def recovered_report(tmp_path_factory):
    """``gradprune analyze --target acc_mean_recovered`` on a CSV with both targets: the Markdown report."""
    d = tmp_path_factory.mktemp("recovered")
    _with_recovered().to_csv(d / "search_results.csv", index=False)
    assert main(["analyze", str(d / "search_results.csv"), "--target", "acc_mean_recovered"]) == 0
    return (d / "correlation_report.md").read_text()


def _row(report: str, first: str) -> list[str]:
    section = report.split("Untuned against recovered")[1]
    line = next(x for x in section.splitlines() if x.startswith(f"| {first} |"))
    return [c.strip() for c in line.strip("|").split("|")]


@pytest.mark.slow  # two analyses' permutation tests: about a minute
def test_analyze_targets_the_recovered_accuracy_and_compares_it_with_the_untuned(recovered_report):
    assert "Untuned against recovered: acc_mean and acc_mean_recovered" in recovered_report
    feature, role, n, rho_u, p_u, rho_r, p_r = _row(recovered_report, "grad_norm_ratio")
    assert (role, n) == ("statistics", str(N))
    assert float(rho_u) < -0.8 and float(p_u) < 0.05  # the planted effect on the untuned accuracy
    assert abs(float(rho_r)) < abs(float(rho_u))
    assert _row(recovered_report, "proxy_kl")[1] == "proxies"
    section = recovered_report.split("Untuned against recovered")[1]
    # what recovery measured is never a feature
    assert "| recovery_loss_final |" not in section and "| ppl_recovered |" not in section
    stats_u, stats_r = (float(x) for x in _row(recovered_report, "gradient statistics")[1::2][:2])
    assert stats_u > stats_r  # nested R² of the statistics: untuned above recovered
