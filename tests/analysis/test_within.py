"""Analysis within a pruning ratio (or a model): planted data where the pooled correlation is strong but
nothing holds within a ratio, and the reverse (Simpson's reversal); the ratio as the baseline the
statistics must beat; several CSVs and leave-one-model-out."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from gradprune.analysis.command import analyze_command
from gradprune.analysis.pipeline import run_analysis
from gradprune.analysis.within import NOT_WITHIN, REVERSES
from gradprune.errors import GradpruneError

RATIOS = (0.2, 0.3, 0.4)
GRID = [(s, k) for s in (16, 32, 64, 128, 256) for k in (128, 256)]  # 10 settings per ratio


def pooled_only(seed: int = 3) -> pd.DataFrame:
    """Across ratios grad_norm_ratio and acc_mean move together; within a ratio grad_norm_ratio is noise."""
    rng = np.random.default_rng(seed)
    rows = []
    for j, ratio in enumerate(RATIOS):
        for i, (s, k) in enumerate(GRID):
            rows.append(dict(trial=j * len(GRID) + i, success=True, taylor_seq_len=s, taylor_num_samples=k,
                             grad_norm_ratio=rng.uniform(2, 6) + 5 * j, grad_max_ratio=rng.uniform(1, 5),
                             pruning_ratio=ratio, acc_mean=0.62 - 0.05 * j + rng.normal(0, 0.004)))
    return pd.DataFrame(rows)


def simpson(seed: int = 5) -> pd.DataFrame:
    """Within every ratio acc_mean falls with grad_norm_ratio; the ratio shifts both up, so pooled they rise
    together."""
    rng = np.random.default_rng(seed)
    rows = []
    for j, ratio in enumerate(RATIOS):
        for i, (s, k) in enumerate(GRID):
            u = rng.uniform(0, 4)
            rows.append(dict(trial=j * len(GRID) + i, success=True, taylor_seq_len=s, taylor_num_samples=k,
                             grad_norm_ratio=2 + u + 6 * j, grad_max_ratio=rng.uniform(1, 5), pruning_ratio=ratio,
                             acc_mean=0.50 + 0.08 * j - 0.01 * u + rng.normal(0, 0.002)))
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def pooled_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("pooled")
    pooled_only().to_csv(out / "search_results.csv", index=False)
    analyze_command(out / "search_results.csv", by="pruning_ratio", paper=False)
    return out


@pytest.fixture(scope="module")
def simpson_analysis(tmp_path_factory):
    out = tmp_path_factory.mktemp("simpson")
    simpson().to_csv(out / "search_results.csv", index=False)
    analyze_command(out / "search_results.csv", paper=False)  # no --by: split by the ratio on its own
    return out, run_analysis(out / "search_results.csv", "acc_mean", 0)


@pytest.mark.slow  # a whole analysis with per-level permutation tests: minutes on 2 cores
def test_planted_pooled_correlation_is_strong_but_nothing_within(pooled_dir):
    a = run_analysis(pooled_dir / "search_results.csv", "acc_mean", 0, by="pruning_ratio")
    pooled = next(c for c in a.target_corrs if c.x == "grad_norm_ratio")
    within = a.within.pooled_of("grad_norm_ratio")
    assert pooled.significant and pooled.spearman < -0.8
    assert not within.significant and abs(within.spearman) < 0.4
    assert a.within.verdicts["grad_norm_ratio"] == NOT_WITHIN
    for lv in a.within.levels:
        c = next(c for c in lv.corrs if c.x == "grad_norm_ratio")
        assert c.n == len(GRID) and not c.significant
    report = (pooled_dir / "correlation_report.md").read_text()  # unwrapped lines
    assert "Does not hold within a pruning ratio: grad_norm_ratio correlates with acc_mean pooled" in report
    # the pooled relation is never stated as a finding
    assert "higher grad_norm_ratio goes with lower acc_mean (strong" not in report
    assert "(1) grad_norm_ratio is strongly negatively correlated with acc_mean: NOT SUPPORTED" in report


@pytest.mark.slow  # a whole analysis with per-level permutation tests: minutes on 2 cores
def test_simpson_reversal_reports_the_within_direction_only(simpson_analysis):
    out, a = simpson_analysis
    pooled = next(c for c in a.target_corrs if c.x == "grad_norm_ratio")
    within = a.within.pooled_of("grad_norm_ratio")
    assert a.within.grouping.automatic
    assert pooled.significant and pooled.spearman > 0.5
    assert within.significant and within.spearman < -0.9
    assert a.within.verdicts["grad_norm_ratio"] == REVERSES
    for lv in a.within.levels:
        assert next(c for c in lv.corrs if c.x == "grad_norm_ratio").spearman < -0.8
    report = (out / "correlation_report.md").read_text()  # unwrapped lines
    assert "higher grad_norm_ratio goes with higher acc_mean" not in report
    assert "higher grad_norm_ratio goes with lower acc_mean (strong" in report
    assert "Reversed within a pruning ratio (Simpson's paradox)" in report
    assert "the rows hold 3 pruning ratios" in report
    assert "(1) grad_norm_ratio is strongly negatively correlated with acc_mean: SUPPORTED" in report


@pytest.mark.slow  # a whole analysis with per-level permutation tests: minutes on 2 cores
def test_pruning_ratio_is_a_baseline_not_a_statistic(simpson_analysis):
    _, a = simpson_analysis
    assert "pruning_ratio" in a.roles.by_role()["ratio"]
    assert "pruning_ratio" not in a.roles.by_role().get("statistics", [])
    assert {"ratio", "statistics + ratio"} <= set(a.role_scores)
    from gradprune.analysis.findings import role_sentence

    assert "baseline of the pruning ratio" in role_sentence(a)


def test_by_none_and_bad_by(tmp_path):
    path = tmp_path / "s.csv"
    pooled_only().to_csv(path, index=False)
    with pytest.raises(GradpruneError, match=r"--by taylor_seqlen: .* no column 'taylor_seqlen'.*taylor_seq_len"):
        run_analysis(path, "acc_mean", 0, by="taylor_seqlen")
    with pytest.raises(GradpruneError, match=r"--by grad_norm_ratio: .* 30 distinct values"):
        run_analysis(path, "acc_mean", 0, by="grad_norm_ratio")
    with pytest.raises(GradpruneError, match="--by model: .* no model column"):
        run_analysis(path, "acc_mean", 0, by="model")


@pytest.mark.slow  # a whole analysis with per-level permutation tests: minutes on 2 cores
def test_several_csvs_combine_and_leave_one_model_out(tmp_path):
    paths = []
    rng = np.random.default_rng(11)
    for m, name in enumerate(("llama", "mistral")):
        g = rng.uniform(2, 10, 12)
        df = pd.DataFrame({"trial": range(12), "success": True, "taylor_seq_len": rng.choice([16, 64, 256], 12),
                           "grad_norm_ratio": g, "grad_max_ratio": rng.uniform(1, 5, 12), "model": name,
                           "acc_mean": 0.7 - 0.02 * m - 0.01 * g + rng.normal(0, 0.003, 12)})
        folder = tmp_path / name
        folder.mkdir()
        df.to_csv(folder / "search_results.csv", index=False)
        paths.append(folder / "search_results.csv")
    a = run_analysis(paths, "acc_mean", 0, by="model")
    assert a.n == 24 and a.within.grouping.levels == ["llama", "mistral"]
    assert set(a.loaded.rows["search"]) == {"llama", "mistral"}
    assert a.lomo is not None and set(a.lomo.per_model) == {"llama", "mistral"}
    assert all(n == 12 for n, _ in a.lomo.per_model.values())
    assert a.within.verdicts.get("grad_norm_ratio") in (None, "holds")
    assert a.within.pooled_of("grad_norm_ratio").spearman < -0.9
