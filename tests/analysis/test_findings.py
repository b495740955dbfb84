"""Verdicts on the original tool's hypotheses and the plain-language variance sentence."""

from __future__ import annotations

import pytest

from gradprune.analysis.correlations import Correlation
from gradprune.analysis.findings import correlation_verdict, variance_sentence
from gradprune.analysis.replicates import VarianceDecomposition


def corr(rho: float, p_adj: float, n: int = 40) -> Correlation:
    return Correlation("grad_norm_ratio", "acc_mean", n, rho, p_adj, rho, p_adj, p_adj, p_adj, (rho - 0.1, rho + 0.1),
                       (rho - 0.1, rho + 0.1))


@pytest.mark.parametrize(("c", "strong", "verdict"), [
    (corr(-0.8, 0.001), True, "SUPPORTED:"),
    (corr(-0.3, 0.01), True, "PARTLY SUPPORTED"),
    (corr(-0.3, 0.01), False, "SUPPORTED:"),
    (corr(0.6, 0.001), True, "CONTRADICTED"),
    (corr(-0.2, 0.4), True, "NOT SUPPORTED"),
    (None, True, "CANNOT BE CHECKED: the column is not in this CSV"),
    (Correlation("extreme_pruning_layers", "acc_mean", 30, undefined="undefined (constant)"), False,
     "CANNOT BE CHECKED: extreme_pruning_layers is (constant)"),
])
def test_verdicts(c, strong, verdict):
    assert correlation_verdict(c, -1, strong, "acc_mean").startswith(verdict)


def test_small_n_says_the_evidence_is_weak():
    text = correlation_verdict(corr(-0.4, 0.2, n=8), -1, True, "acc_mean")
    assert "NOT SUPPORTED" in text and "With n = 8 the evidence is weak either way" in text
    assert "-0.4000" in text  # the coefficient is printed with 4 decimals and an ASCII minus


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
