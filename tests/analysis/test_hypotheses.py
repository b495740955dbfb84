"""The original tool's hypotheses: the table drives the report's lines; verdicts with their numbers."""

from __future__ import annotations

import pytest

from gradprune.analysis.correlations import Correlation
from gradprune.analysis.hypotheses import HYPOTHESES, Hypothesis, correlation_verdict, hypotheses
from gradprune.analysis.pipeline import run_analysis


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


def test_the_table_holds_the_four_claims_of_the_original_tool():
    assert [h.claim for h in HYPOTHESES] == [
        "grad_norm_ratio is strongly negatively correlated with {t}", "shorter taylor_seq_len gives higher {t}",
        "extreme_pruning_layers is negatively correlated with {t}", "a predictor reaches R² > {r2}"]
    assert [h.r2 for h in HYPOTHESES] == [None, None, None, 0.7]


def test_a_new_row_is_a_new_numbered_line(planted, tmp_path):
    path = tmp_path / "planted.csv"
    planted(n=30).to_csv(path, index=False)
    a = run_analysis(path, "acc_mean", 0)
    table = (*HYPOTHESES[:1], Hypothesis("grad_max_ratio goes with higher {t}", ("grad_max_ratio",), sign=1))
    lines = hypotheses(a, table)
    assert lines[0].startswith("(1) grad_norm_ratio is strongly negatively correlated with acc_mean: SUPPORTED")
    assert len(lines) == 2 and lines[1].startswith("(2) grad_max_ratio goes with higher acc_mean: NOT SUPPORTED")
    assert hypotheses(a)[3].startswith("(4) a predictor reaches R² > 0.7: ")
