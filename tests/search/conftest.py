"""Search fixtures: a search recipe over the tiny test model (no evaluation, seconds per trial)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def write_search(model_dir, corpus_file, tmp_path):
    """Write a search recipe with the given grid (and extra keys); returns its path."""

    def write(grid: dict, extra_overrides: tuple[str, ...] = (), **extra) -> Path:
        spec = {
            "base": str(ROOT / "recipes/tiny.yaml"),
            "overrides": [f"model.name_or_path={model_dir}", "calibration.dataset.name=text_file",
                          f"calibration.dataset.path={corpus_file}", "calibration.num_samples=8",
                          "calibration.seq_len=16", "calibration.batch_size=4", "eval.run=none",
                          "pruning.attention_layers=[0,4]", "pruning.mlp_layers=[0,4]",
                          *extra_overrides],  # later overrides win (applied in order)
            "grid": grid,
            "output_dir": str(tmp_path / "search"),
            **extra,
        }
        p = tmp_path / "search.yaml"
        p.write_text(yaml.safe_dump(spec))
        return p

    return write
