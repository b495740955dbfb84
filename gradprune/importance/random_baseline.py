"""Random baseline: seeded uniform scores, the floor any real estimator must beat."""

from __future__ import annotations

import torch
from pydantic import BaseModel, ConfigDict

from gradprune.importance.base import ImportanceEstimator, Scores


class RandomParams(BaseModel):
    """Params of the random baseline."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    seed: int = 0


class RandomImportance(ImportanceEstimator):
    """Uniform random scores from a seeded generator (same seed, same plan)."""

    Params = RandomParams

    def scores(self) -> Scores:
        """One uniform draw per group, in a fixed layer/kind order."""
        gen = torch.Generator().manual_seed(self.params.seed)
        out: Scores = {}
        for layer in sorted(self.layers, key=lambda lm: lm.index):
            out[(layer.index, "attn")] = torch.rand(layer.n_kv, generator=gen)
            out[(layer.index, "mlp")] = torch.rand(layer.n_channels, generator=gen)
        return out
