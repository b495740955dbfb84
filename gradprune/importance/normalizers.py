"""Per-layer score normalizers, applied to each (layer, kind) score vector before global ranking.

Raw scores are not comparable across layers (deeper layers have larger gradients) nor across
kinds (a head sums 4 matrices, a channel 3 vectors); normalizing per layer and kind fixes the scale.
"""

from __future__ import annotations

import torch

from gradprune.registry import NoParams

_EPS = 1e-12


class Normalizer:
    """Base: ``__call__`` maps one layer's scores [n_groups] to normalized scores of the same shape."""

    Params = NoParams

    def __init__(self, params=None) -> None:
        self.params = params if params is not None else self.Params()

    def __call__(self, scores: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class IdentityNormalizer(Normalizer):
    """No normalization: raw scores are ranked across layers as they are."""

    def __call__(self, scores: torch.Tensor) -> torch.Tensor:
        return scores.clone()


class MeanNormalizer(Normalizer):
    """s / mean(s)."""

    def __call__(self, scores: torch.Tensor) -> torch.Tensor:
        return scores / scores.mean().abs().clamp_min(_EPS)


class MaxNormalizer(Normalizer):
    """s / max(|s|)."""

    def __call__(self, scores: torch.Tensor) -> torch.Tensor:
        return scores / scores.abs().max().clamp_min(_EPS)


class SumNormalizer(Normalizer):
    """s / Σ|s|."""

    def __call__(self, scores: torch.Tensor) -> torch.Tensor:
        return scores / scores.abs().sum().clamp_min(_EPS)


class L2Normalizer(Normalizer):
    """s / ‖s‖₂."""

    def __call__(self, scores: torch.Tensor) -> torch.Tensor:
        return scores / scores.norm().clamp_min(_EPS)


class ZScoreNormalizer(Normalizer):
    """(s − mean) / std; a layer with one group (or constant scores) maps to zeros."""

    def __call__(self, scores: torch.Tensor) -> torch.Tensor:
        if scores.numel() < 2:
            return torch.zeros_like(scores)
        return (scores - scores.mean()) / scores.std().clamp_min(_EPS)


class RankNormalizer(Normalizer):
    """Rank within the layer scaled to [0, 1] (ties broken by index, so the result is stable)."""

    def __call__(self, scores: torch.Tensor) -> torch.Tensor:
        n = scores.numel()
        if n < 2:
            return torch.zeros_like(scores, dtype=torch.float32)
        order = torch.argsort(scores, stable=True)
        ranks = torch.empty(n, dtype=torch.float32)
        ranks[order] = torch.arange(n, dtype=torch.float32)
        return ranks / (n - 1)
