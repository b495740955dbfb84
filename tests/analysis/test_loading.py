"""Reading a search CSV: which rows count as full results, and clear errors for unusable files."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from gradprune.analysis.loading import load_search_rows, read_table
from gradprune.errors import GradpruneError


def test_failed_pruned_and_unevaluated_rows_are_set_aside(planted, make_csv):
    df = planted(n=12)
    df.loc[0, "success"] = False
    df.loc[1, "status"] = "pruned"
    df["evaluated"] = True
    df.loc[2, "evaluated"] = False
    df.loc[3, "acc_mean"] = None
    rows = load_search_rows(make_csv(df), "acc_mean")
    assert (len(rows.rows), rows.failed, rows.not_evaluated, rows.missing_target) == (8, 1, 2, 1)
    assert rows.notes == []


def test_text_booleans_and_missing_success_column(planted, make_csv):
    df = planted(n=6)
    df["success"] = ["True", "true", "1", "False", "yes", "TRUE"]
    assert len(load_search_rows(make_csv(df), "acc_mean").rows) == 5
    rows = load_search_rows(make_csv(df.drop(columns="success")), "acc_mean")
    assert len(rows.rows) == 6 and "no 'success' column" in rows.notes[0]


def test_unreadable_success_values_are_an_error(planted, make_csv):
    df = planted(n=6)
    df["success"] = ["True", "maybe", "1", "False", "yes", "TRUE"]
    with pytest.raises(GradpruneError, match="'success' should hold True/False"):
        load_search_rows(make_csv(df), "acc_mean")


def test_missing_target_lists_numeric_columns_and_close_names(planted_csv):
    with pytest.raises(GradpruneError) as err:
        load_search_rows(planted_csv, "acc_meen")
    msg = str(err.value)
    assert "Did you mean 'acc_mean'" in msg and "grad_norm_ratio" in msg and str(planted_csv) in msg


def test_too_few_rows(planted, make_csv):
    df = planted(n=5)
    df.loc[:1, "success"] = False
    with pytest.raises(GradpruneError, match=r"only 3 successful.*2 failed.*at least 4"):
        load_search_rows(make_csv(df), "acc_mean")


@pytest.mark.parametrize("content", [b"\x89PNG\r\n\x1a\n\x00\x00binary", "", '{"a": 1}\n', "a;b;c\n1;2;3\n"])
def test_not_a_csv(make_csv, content):
    with pytest.raises(GradpruneError, match="CSV") as err:
        read_table(make_csv(content, "x.csv"))
    assert "x.csv" in str(err.value)


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(GradpruneError, match="file not found"):
        read_table(tmp_path / "nope.csv")
    with pytest.raises(GradpruneError, match="is not a file"):
        read_table(tmp_path)


def test_target_without_numbers(make_csv):
    path = make_csv(pd.DataFrame({"acc_mean": ["a", "b"], "x": [1, 2]}))
    with pytest.raises(GradpruneError, match="holds no numbers"):
        load_search_rows(path, "acc_mean")


def test_infinite_values_are_missing_with_a_note(planted, make_csv):
    df = planted(n=10)
    df.loc[2, "grad_norm_ratio"] = np.inf
    df.loc[5, "acc_mean"] = -np.inf
    rows = load_search_rows(make_csv(df), "acc_mean")
    assert len(rows.rows) == 9 and rows.missing_target == 1
    assert "grad_norm_ratio is ±inf in row(s) 3: treated as missing" in rows.notes
    assert "acc_mean is ±inf in row(s) 6: treated as missing" in rows.notes
    assert rows.rows["grad_norm_ratio"].isna().sum() == 1


def test_repeated_trials_are_counted_once(planted, make_csv):
    df = planted(n=10)
    df = pd.concat([df, df.iloc[[3]]], ignore_index=True)  # row 11 repeats row 4 exactly
    rows = load_search_rows(make_csv(df), "acc_mean")
    assert len(rows.rows) == 10 and rows.duplicates == 1 and rows.total == 11
    assert any("row(s) 11 repeat an earlier row exactly" in n for n in rows.notes)
    changed = pd.concat([planted(n=10), planted(n=10).iloc[[3]].assign(acc_mean=0.1)], ignore_index=True)
    rows = load_search_rows(make_csv(changed), "acc_mean")
    assert len(rows.rows) == 10 and any("repeat an earlier trial with other values" in n for n in rows.notes)


def test_truncated_last_row_is_reported(planted, make_csv):
    text = planted(n=8).to_csv(index=False)
    cut = text.rstrip("\n").rsplit(",", 4)[0]  # the last row loses its last 4 fields
    rows = load_search_rows(make_csv(cut), "acc_mean")
    assert len(rows.rows) == 7 and rows.truncated == 1 and rows.total == 8
    assert "row 8 (the last) has fewer fields than the header" in rows.notes[0]
