"""Untuned and recovered metrics side by side: the search CSV's columns, the summary table, the feature roles."""

from __future__ import annotations

from rich.console import Console

from gradprune.prediction.columns import is_evaluation_output
from gradprune.progress import summary_table
from gradprune.recovery.stage import recovered_metrics
from gradprune.search.table import csv_text

METRICS = {"pruning_ratio": 0.4, "params_before": 10, "params_after": 6, "ppl": 2.69, "acc_mean": 0.748,
           "acc_tiny_arc": 0.59, "dense_ppl": 2.37, "dense_acc_mean": 0.804, "dense_acc_tiny_arc": 0.95}


def test_recovered_metrics_are_suffixed_and_compared_with_the_dense_model():
    rec = recovered_metrics({"ppl": 2.6, "acc_mean": 0.75, "acc_tiny_arc": 0.6}, {"ppl": 2.4, "acc_mean": 0.8})
    assert rec == {"ppl_recovered": 2.6, "acc_mean_recovered": 0.75, "acc_tiny_arc_recovered": 0.6,
                   "acc_drop_recovered": 0.8 - 0.75, "ppl_ratio_recovered": 2.6 / 2.4}
    assert recovered_metrics({"ppl": 2.6}, None) == {"ppl_recovered": 2.6}


def test_csv_keeps_the_untuned_columns_and_puts_the_recovered_beside_them():
    row = {"trial": 0, "success": True, **METRICS, **recovered_metrics({"ppl": 2.6, "acc_mean": 0.742}, None),
           "recovery_loss_final": 1.19}
    header = csv_text([row]).splitlines()[0].split(",")
    assert header.index("acc_mean_recovered") == header.index("acc_mean") + 1
    assert header.index("ppl_recovered") == header.index("ppl") + 1
    assert "recovery_loss_final" in header


def test_summary_table_has_a_recovered_column_only_after_a_recovery():
    console = Console(width=80, record=True)
    console.print(summary_table({**METRICS, "ppl_recovered": 2.599, "acc_mean_recovered": 0.742}))
    text = console.export_text()
    assert "recovered" in text.splitlines()[2]  # the header: metric, pruned, recovered, dense
    assert any(line.split("│")[1].strip() == "ppl" and "2.5990" in line for line in text.splitlines() if "│" in line)
    assert "ppl_recovered" not in text  # a column, not a row
    console = Console(width=80, record=True)
    console.print(summary_table({**METRICS, "time_eval_recovered": 0.0}))  # recovered, not evaluated
    assert "recovered" not in console.export_text()


def test_what_recovery_measured_is_never_a_feature():
    for name in ("acc_mean_recovered", "ppl_recovered", "recovery_loss_final", "recovery_tokens",
                 "acc_tiny_arc_stderr_recovered"):
        assert is_evaluation_output(name), name
    assert not is_evaluation_output("grad_norm_ratio")
