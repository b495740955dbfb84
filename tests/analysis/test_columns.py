"""Column roles: target parts, bookkeeping, non-numeric, constant and duplicate columns."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from gradprune.errors import GradpruneError
from gradprune.prediction.columns import assign_roles, feature_role, is_bookkeeping, is_target_part


@pytest.mark.parametrize("name", ["acc_boolq", "acc_norm_hellaswag", "acc_piqa_stderr", "acc_norm_mean", "dense_acc_mean",
                                  "acc_drop", "acc_mean_stderr", "acc_some_new_task"])
def test_parts_of_an_accuracy_target(name):
    assert is_target_part(name, "acc_mean")
    assert is_target_part(name, "acc_hellaswag")


@pytest.mark.parametrize("name", ["grad_norm_ratio", "ppl", "ppl_wikitext2", "taylor_seq_len", "pruning_ratio"])
def test_features_of_an_accuracy_target(name):
    assert not is_target_part(name, "acc_mean")


def test_perplexity_target_excludes_perplexities_but_not_accuracy():
    assert is_target_part("ppl_ptb", "ppl") and is_target_part("dense_ppl", "ppl_wikitext2")
    assert not is_target_part("acc_mean", "ppl")


@pytest.mark.parametrize("name", ["trial", "config_id", "seed", "calibration.seed", "time_calibration", "time_eval_s",
                                  "success", "error", "status", "Unnamed: 0", "eval_seconds"])
def test_bookkeeping(name):
    assert is_bookkeeping(name)


def test_roles(planted):
    df = planted(n=10)
    df["normalizer.name"] = ["zscore", "rank"] * 5
    df["pruning.ratio"] = 0.2
    df["empty"] = float("nan")
    df["calibration.seq_len"] = df["taylor_seq_len"]
    df["numbers_as_text"] = [str(v) for v in range(10)]
    roles = assign_roles(df, "acc_mean", "x.csv", include=["numbers_as_text"])
    assert roles.non_numeric == ["normalizer.name"]
    assert set(roles.constant) == {"pruning.ratio", "empty"}
    assert roles.duplicates == {"calibration.seq_len": "taylor_seq_len"}
    assert "acc_hellaswag" in roles.target_parts and "trial" in roles.bookkeeping
    assert "numbers_as_text" in roles.features and "taylor_seq_len" in roles.features
    assert list(roles.data.columns) == ["acc_mean", *roles.features]
    assert roles.unknown == []


def test_a_numeric_column_of_unknown_meaning_is_ignored_unless_included(planted):
    df = planted(n=12).assign(note_id=range(12), grad_l1_ratio=np.linspace(1, 3, 12),
                           proxy_kl=np.random.default_rng(1).uniform(0, 1, 12))
    roles = assign_roles(df, "acc_mean", "x.csv")
    assert roles.unknown == ["note_id"] and "note_id" not in roles.features and "note_id" not in roles.data
    # a plugin collector's ratio and a proxy are known without being listed anywhere
    assert {"grad_l1_ratio", "proxy_kl"} <= set(roles.features)
    assert "note_id" in assign_roles(df, "acc_mean", "x.csv", include=["note_id"]).features
    assert "note_id" in assign_roles(df, "acc_mean", "x.csv", include=["all"]).features


def test_only_unknown_columns_vary_names_them_and_the_flag():
    df = pd.DataFrame({"acc_mean": np.linspace(0.5, 0.7, 6), "note_id": range(6), "taylor_seq_len": 64})
    with pytest.raises(GradpruneError, match=r"unknown meaning \(note_id\).*--include"):
        assign_roles(df, "acc_mean", "x.csv")


def test_every_feature_constant_is_an_error(planted):
    df = planted(n=8)[["acc_mean", "success"]].assign(taylor_seq_len=64, ppl=20.0)
    with pytest.raises(GradpruneError, match=r"x.csv: every candidate feature is constant.*taylor_seq_len"):
        assign_roles(df, "acc_mean", "x.csv")


def test_constant_target_is_an_error():
    df = pd.DataFrame({"acc_mean": [0.5] * 5, "g": range(5)})
    with pytest.raises(GradpruneError, match="same value in every used row"):
        assign_roles(df, "acc_mean", "x.csv")


@pytest.mark.parametrize(("name", "role"), [
    ("taylor_seq_len", "settings"), ("taylor_num_samples", "settings"), ("calibration.num_samples", "settings"),
    ("grad_norm_ratio", "statistics"), ("extreme_pruning_layers", "statistics"), ("pruning_ratio", "ratio"),
    ("target_ratio", "ratio"), ("pruning.ratio", "ratio"), ("params_after", "ratio"),
    ("proxy_loss", "proxies"), ("proxy_kl", "proxies"),
])
def test_feature_roles(name, role):
    assert feature_role(name) == role


@pytest.mark.parametrize("name", ["ppl", "ppl_ratio", "ppl_wikitext2", "dense_ppl", "acc_piqa", "acc_norm_mean"])
def test_evaluation_outputs_are_never_features(planted, name):
    df = planted(n=12).assign(**{name: np.arange(12.0)})
    roles = assign_roles(df, "acc_hellaswag" if name.startswith("acc") else "acc_mean", "x.csv")
    assert name not in roles.features


def test_near_duplicates_are_one_feature(planted):
    df = planted(n=20)
    # grad_std ≈ grad_norm when the mean gradient is ≈ 0 and the layers are equally large: 1e-8 apart
    df["grad_std_ratio"] = df["grad_norm_ratio"] * (1 + 1e-8 * np.random.default_rng(0).normal(size=20))
    roles = assign_roles(df, "acc_mean", "x.csv")
    assert "grad_std_ratio" not in roles.features and "grad_norm_ratio" in roles.features
    kept, rho = roles.near_duplicates["grad_std_ratio"]
    assert kept == "grad_norm_ratio" and rho == pytest.approx(stats.spearmanr(df.grad_std_ratio, df.grad_norm_ratio)[0])


def test_one_text_cell_keeps_the_rest_of_the_column(planted):
    df = planted(n=10)
    df["grad_max_ratio"] = df["grad_max_ratio"].astype(object)
    df.loc[6, "grad_max_ratio"] = "oom"
    roles = assign_roles(df, "acc_mean", "x.csv")
    assert "grad_max_ratio" in roles.features and roles.bad_cells == [(6, "grad_max_ratio", "oom")]
    assert roles.data["grad_max_ratio"].isna().sum() == 1


def test_near_duplicates_need_enough_shared_rows():
    """Six rows, two gaps in grad_norm_ratio: on the four rows it shares with the others, unrelated columns
    can order the rows alike by chance; they must not be merged into its group."""
    df = pd.DataFrame({"acc_mean": [0.61, 0.58, 0.66, 0.52, 0.6, 0.55],
                       "grad_norm_ratio": [2.0, np.nan, 4.0, 5.0, np.nan, 7.0],
                       "grad_std_ratio": [1.0, 9.0, 2.0, 3.0, 0.5, 4.0],  # same order as grad_norm on the 4 shared
                       "proxy_loss": [3.0, 1.0, 4.0, 5.0, 2.0, 6.0]})
    roles = assign_roles(df, "acc_mean", "x.csv")
    assert roles.near_duplicates == {}
    assert {"grad_norm_ratio", "grad_std_ratio", "proxy_loss"} <= set(roles.features)
    assert ("grad_norm_ratio", "grad_std_ratio", 4) in roles.too_few_to_merge or \
        ("grad_std_ratio", "grad_norm_ratio", 4) in roles.too_few_to_merge


def test_a_near_duplicate_with_gaps_is_represented_by_its_complete_twin(planted):
    from gradprune.prediction.columns import model_inputs

    df = planted(n=20)
    df["grad_std_ratio"] = df["grad_norm_ratio"] * (1 + 1e-9 * np.arange(20))
    df.loc[[3, 11, 17], "grad_norm_ratio"] = np.nan  # 85 % coverage: below what the predictors accept
    roles = assign_roles(df, "acc_mean", "x.csv")
    kept, _ = roles.near_duplicates["grad_norm_ratio"]
    assert kept == "grad_std_ratio" and roles.near_duplicate_rows["grad_norm_ratio"] == 17
    X, _, _, notes = model_inputs(roles, "x.csv")
    assert "grad_std_ratio" in X.columns  # the group is still offered to the predictors
