"""``gradprune analyze`` end to end through the CLI: outputs, overwrite rule, and every robustness case."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pandas as pd
import pytest
from scipy import stats

from gradprune.cli import main

OUTPUTS = {"correlation_heatmap.png", "scatter_matrix.png", "correlation_report.txt", "correlation_report.md",
           "prediction_model.json", "correlations.csv"}


@pytest.fixture(scope="module")
def planted_run(tmp_path_factory, planted):
    """One analyze run on the planted CSV, with a non-numeric grid key and a constant column."""
    d = tmp_path_factory.mktemp("planted")
    df = planted()
    df["normalizer.name"] = ["zscore", "rank", "mean"] * 10
    df["pruning.ratio"] = 0.2
    df.to_csv(d / "search_results.csv", index=False)
    assert main(["analyze", str(d / "search_results.csv")]) == 0
    return d, df


def test_outputs_beside_the_csv(planted_run):
    d, _ = planted_run
    assert {p.name for p in d.iterdir()} >= OUTPUTS
    assert not (d / "per_config.csv").exists()
    for png in ("correlation_heatmap.png", "scatter_matrix.png"):
        assert (d / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not [p for p in d.iterdir() if p.name.endswith(".tmp")]


def test_report_prints_scipy_spearman_and_lists_skipped_columns(planted_run):
    d, df = planted_run
    text = (d / "correlation_report.txt").read_text()
    ref = stats.spearmanr(df.grad_norm_ratio, df.acc_mean).statistic
    assert f"{ref:.4f}" in text
    assert text.index("KEY FINDINGS") < text.index("HYPOTHESES") < text.index("CORRELATIONS WITH")
    assert "Non-numeric, skipped: normalizer.name" in text
    assert re.search(r"pruning\.ratio\s+30\s+undefined \(constant\)", text)
    assert "acc_hellaswag" in text.split("Parts or relatives")[1]
    assert "nan" not in text.lower().replace("mean", "")
    md = (d / "correlation_report.md").read_text()
    assert md.startswith("# gradprune analysis") and "| grad_norm_ratio |" in md


def test_hypotheses_are_checked_with_numbers(planted_run):
    d, _ = planted_run
    text = (d / "correlation_report.txt").read_text()
    hyp = text.split("HYPOTHESES OF THE ORIGINAL TOOL")[1].split("CORRELATIONS WITH")[0]
    assert "(1) grad_norm_ratio is strongly negatively correlated with acc_mean: SUPPORTED" in hyp
    assert "(2) shorter taylor_seq_len gives higher acc_mean: NOT SUPPORTED" in hyp
    assert "(3) extreme_pruning_layers" in hyp and "(4) a predictor reaches R² > 0.7: SUPPORTED" in hyp
    assert re.search(r"R² = 0\.\d{4} in sample, 0\.\d{4} cross-validated \(10-fold\), nested cross-validated R²",
                     " ".join(hyp.split()))
    assert "permutation p = 0.01 (99 permutations" in " ".join(hyp.split())


def test_correlations_csv_and_model(planted_run):
    d, df = planted_run
    table = pd.read_csv(d / "correlations.csv")
    assert set(table.scope) == {"target", "heatmap_pairs"}
    row = table[(table.scope == "target") & (table.x == "grad_norm_ratio")].iloc[0]
    assert row.spearman == pytest.approx(stats.spearmanr(df.grad_norm_ratio, df.acc_mean).statistic)
    assert row.spearman_ci_low < row.spearman < row.spearman_ci_high
    model = json.loads((d / "prediction_model.json").read_text())
    assert "grad_norm_ratio" in model["features"] and model["metrics"]["r2_cv"] > 0.9


def test_existing_outputs_need_overwrite(planted_run, capsys):
    d, _ = planted_run
    before = {p.name: p.stat().st_mtime_ns for p in d.iterdir()}
    assert main(["analyze", str(d / "search_results.csv")]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert before == {p.name: p.stat().st_mtime_ns for p in d.iterdir()}


def test_overwrite_replaces_and_removes_stale_outputs(planted_csv, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "per_config.csv").write_text("stale")
    assert main(["analyze", str(planted_csv), "--output_dir", str(out), "--overwrite", "--target", "acc_hellaswag"]) == 0
    assert not (out / "per_config.csv").exists()
    assert "target acc_hellaswag" in (out / "correlation_report.txt").read_text()


@pytest.mark.parametrize("case", ["missing", "not_csv", "target", "few_rows", "constant"])
def test_robustness_exit_2_and_nothing_written(case, make_csv, planted, tmp_path, capsys):
    df = planted(n=10)
    args = []
    if case == "missing":
        path = tmp_path / "nope.csv"
    elif case == "not_csv":
        path = make_csv(b"\x89PNG\r\n\x1a\n\x00\x00\xff\xfe", "search_results.csv")
    elif case == "target":
        path, args = make_csv(df), ["--target", "acc_hellaswg"]
    elif case == "few_rows":
        df.loc[3:, "success"] = False
        path = make_csv(df)
    else:
        path = make_csv(df[["acc_mean", "success", "trial"]].assign(taylor_seq_len=64, grad_norm_ratio=3.0))
    out = tmp_path / "out"
    assert main(["analyze", str(path), "--output_dir", str(out), *args]) == 2
    err = capsys.readouterr().err
    assert str(path) in err and "Traceback" not in err and len(err.strip().splitlines()) <= 3
    assert not out.exists()
    expected = {"missing": "file not found", "not_csv": "not a readable CSV", "target": "Did you mean 'acc_hellaswag'",
                "few_rows": "at least 4", "constant": "every candidate feature is constant"}[case]
    assert expected in err.replace("\n", " ")


def test_help_stays_light():
    code = ("import sys, gradprune.cli, gradprune.analysis.command, gradprune.analysis.pipeline;"
            "print(sorted(m for m in ('matplotlib', 'sklearn', 'scipy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_odd_data_is_reported_not_a_traceback(planted, make_csv, tmp_path):
    df = planted(n=16)
    df["grad_max_ratio"] = df["grad_max_ratio"].astype(object)
    df.loc[4, "grad_max_ratio"] = "oom"
    df.loc[2, "grad_norm_ratio"] = float("inf")
    df = pd.concat([df, df.iloc[[7]], df.iloc[[9]].assign(trial=99)], ignore_index=True)
    text = df.to_csv(index=False).rstrip("\n").rsplit(",", 3)[0]  # and a cut-off last row
    out = tmp_path / "odd"
    assert main(["analyze", str(make_csv(text)), "--output_dir", str(out)]) == 0
    report = " ".join((out / "correlation_report.txt").read_text().split())
    assert "grad_norm_ratio is ±inf in row(s) 3: treated as missing" in report
    assert "grad_max_ratio is not a number in row 5 ('oom')" in report
    assert "row(s) 17 repeat an earlier" in report and "row 18 (the last) has fewer fields" in report
    assert "16 of 18 rows used" in report
