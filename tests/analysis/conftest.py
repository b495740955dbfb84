"""Synthetic search CSVs with known relations: a planted monotone effect, a null, and replicates."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest


def planted_frame(n: int = 30, seed: int = 7) -> pd.DataFrame:
    """acc_mean falls with grad_norm_ratio (planted); taylor_seq_len and the rest are nulls."""
    rng = np.random.default_rng(seed)
    g = rng.uniform(2, 40, n)
    return pd.DataFrame({
        "trial": np.arange(n), "success": True, "status": "complete",
        "taylor_seq_len": rng.choice([16, 32, 64, 128, 256], n), "taylor_num_samples": rng.choice([128, 256, 512], n),
        "grad_norm_ratio": g, "grad_mean_ratio": rng.uniform(1, 5, n), "grad_std_ratio": rng.uniform(1, 5, n),
        "grad_max_ratio": rng.uniform(1, 9, n), "extreme_pruning_layers": rng.integers(0, 4, n),
        "ppl": 20 + rng.normal(0, 1, n), "acc_hellaswag": 0.5 - 0.003 * g + rng.normal(0, 0.01, n),
        "acc_mean": 0.70 - 0.004 * g + rng.normal(0, 0.01, n),
    })


def replicate_frame(effect: float, seed: int = 3, seeds: int = 3, noise: float = 0.005) -> pd.DataFrame:
    """15 configs (seq_len × num_samples) × ``seeds`` replicates; acc_mean falls with log seq_len by ``effect``."""
    rng = np.random.default_rng(seed)
    rows = []
    grid = [(a, b) for a in (16, 32, 64, 128, 256) for b in (128, 256, 512)]
    for cid, (s, k) in enumerate(grid):
        base = 0.6 - effect * np.log2(s / 16) / 4
        for rep in range(seeds):
            rows.append({
                "success": True, "config_id": cid, "seed": rep, "taylor_seq_len": s, "taylor_num_samples": k,
                "grad_norm_ratio": rng.uniform(2, 20), "grad_mean_ratio": rng.uniform(1, 3),
                "grad_max_ratio": rng.uniform(1, 5), "extreme_pruning_layers": int(rng.integers(0, 3)),
                "ppl": 20 + rng.normal(), "acc_mean": base + rng.normal(0, noise),
            })
    return pd.DataFrame(rows)


@pytest.fixture
def planted_csv(tmp_path):
    """Path of a 30-row CSV with a planted grad_norm_ratio effect."""
    path = tmp_path / "search_results.csv"
    planted_frame().to_csv(path, index=False)
    return path


@pytest.fixture
def make_csv(tmp_path):
    """Write a DataFrame (or raw text) to a CSV in tmp_path and return its path."""

    def write(content, name: str = "search_results.csv"):
        path = tmp_path / name
        if isinstance(content, pd.DataFrame):
            content.to_csv(path, index=False)
        else:
            path.write_text(content) if isinstance(content, str) else path.write_bytes(content)
        return path

    return write


@pytest.fixture(scope="session")
def planted():
    """The planted 30-row DataFrame builder (``planted(n=..., seed=...)``)."""
    return planted_frame


@pytest.fixture(scope="session")
def replicates():
    """The replicate DataFrame builder (``replicates(effect, seed=..., seeds=..., noise=...)``)."""
    return replicate_frame
