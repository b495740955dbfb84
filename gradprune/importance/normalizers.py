"""Score normalizers: make group scores comparable before the planner ranks them.

Raw scores differ in scale across kinds (a KV group sums four matrices, an MLP channel three vectors)
and across layers (deeper layers have larger gradients). A normalizer maps one *pool* of scores to
normalized scores; ``normalizer.params.scope`` says what a pool is:

* ``kind`` (the default): one pool of every layer's attention scores, one of every layer's MLP scores.
* ``layer``: one pool per (layer, kind).

What decides the global planner's cut (one ranking over all normalized scores, cut where the removed
parameters reach the target):

* Across layers, within a kind. Under ``kind`` the raw scores decide: a layer whose scores are 10x
  the others' keeps its groups (and, with deeper layers' larger gradients, shallow layers lose more).
  Under ``layer`` each layer is rescaled on its own, so only the shape of a layer's scores matters:
  multiplying one layer's scores by any c > 0 leaves the plan unchanged. A pool of few groups has
  almost no shape: two scores always z-score to ±0.707 and rank to 0 and 1, so with 2 KV groups per
  layer (Qwen2.5-0.5B/1.5B and other GQA models) ``zscore`` or ``rank`` at ``layer`` scope give every
  layer's weaker KV group the same normalized score, and the plan takes the same KV groups whatever
  calibration measured (one from every layer, or at the margin those of the first layers: the
  tie-break). Per-layer pools of fewer than 3 groups are warned about (:class:`NormalizerWarning`).
* Between attention and MLP, under either scope. No pool spans both kinds, and every built-in but
  ``none`` is invariant to multiplying a pool by c > 0 (``zscore`` and ``rank`` to any increasing
  affine map). So the split of the removed parameters between attention and MLP is decided by where
  each group stands within its own pool (``zscore``: standard deviations from the pool mean;
  ``rank``: quantile; ``mean``/``max``/``sum``/``l2``: ratio to the pool's mean / max / sum / norm),
  weighed by the parameters each group removes, and never by how raw attention scores compare with
  raw MLP scores: multiplying every KV score by 1000 gives the same plan. Only ``none`` ranks raw
  scores across kinds (larger KV scores then keep more attention).

``kind`` is the default of every built-in because GQA layers have 2-8 KV groups, too few for
per-layer statistics; one pool per kind still removes the attention/MLP scale difference (the reason
to normalize at all) while the plan keeps following the scores. ``layer`` suits many groups per
layer, where it prunes every layer by about the same amount.

The local planner removes the same number of groups from every allowed layer and picks them within
each layer; every built-in keeps the order of the scores within a pool, so none changes a local plan.
"""

from __future__ import annotations

import warnings
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict

from gradprune.importance.base import Scores

_EPS = 1e-12
#: per-layer pools smaller than this are warned about: their statistics carry almost no information
MIN_POOL = 3


class NormalizerWarning(UserWarning):
    """Normalized scores that say little about the raw ones (per-layer pools of very few groups)."""


class ScopeParams(BaseModel):
    """Params of the built-in normalizers: ``scope`` is what one pool of scores is."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    scope: Literal["layer", "kind"] = "kind"


class Normalizer:
    """Base: ``__call__`` maps one pool of scores [n] to normalized scores of the same shape.

    :meth:`normalize` cuts a whole score set into pools by ``params.scope`` and calls ``__call__``
    on each. A subclass with its own ``Params`` model and no ``scope`` field keeps per-layer pools.
    """

    Params = ScopeParams
    #: whether a score's normalized value depends on the rest of its pool (not for the identity)
    uses_pool: bool = True

    def __init__(self, params=None) -> None:
        self.params = params if params is not None else self.Params()

    def __call__(self, scores: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    @property
    def scope(self) -> str:
        """``layer`` or ``kind``: one pool per (layer, kind), or one per kind across all layers."""
        return getattr(self.params, "scope", "layer")

    def normalize(self, scores: Scores) -> Scores:
        """Normalize every (layer, kind) score vector within its pool; same keys, order and shapes."""
        scores = {k: v.float() for k, v in scores.items()}
        if not self.uses_pool:
            return {k: self(v) for k, v in scores.items()}
        if self.scope == "layer":
            self._warn_small_pools(scores)
            return {k: self(v) for k, v in scores.items()}
        out: Scores = {}
        for kind in sorted({kind for _, kind in scores}):
            keys = sorted(k for k in scores if k[1] == kind)
            pooled = self(torch.cat([scores[k].flatten() for k in keys]))
            for k, part in zip(keys, pooled.split([scores[k].numel() for k in keys]), strict=True):
                out[k] = part.reshape(scores[k].shape)
        return {k: out[k] for k in scores}

    def _warn_small_pools(self, scores: Scores) -> None:
        """Warn once per kind about the layers whose pool is too small for per-layer statistics."""
        small: dict[tuple[str, int], list[int]] = {}
        for (layer, kind), v in scores.items():
            if v.numel() < MIN_POOL:
                small.setdefault((kind, v.numel()), []).append(layer)
        for (kind, n), layers in sorted(small.items()):
            warnings.warn(
                f"normalizer.params.scope=layer: the {kind} scores of {layer_list(layers)} hold only {n} "
                f"group(s) per layer (fewer than {MIN_POOL}); {type(self).__name__} of so few scores carries "
                f"almost no information (2 scores always z-score to ±0.707 and rank to 0 and 1), so which of "
                f"these layers lose {kind} groups does not follow the scores; use "
                f"normalizer.params.scope=kind to rank them across layers",
                NormalizerWarning, stacklevel=3)


def layer_list(layers: list[int]) -> str:
    """``layers 0-3, 7`` : sorted layer indices with consecutive runs collapsed (for messages)."""
    runs: list[list[int]] = []
    for i in sorted(layers):
        if runs and i == runs[-1][-1] + 1:
            runs[-1].append(i)
        else:
            runs.append([i])
    parts = [f"{r[0]}-{r[-1]}" if len(r) > 1 else str(r[0]) for r in runs]
    return ("layer " if len(layers) == 1 else "layers ") + ", ".join(parts)


class IdentityNormalizer(Normalizer):
    """No normalization: raw scores are ranked across layers and kinds as they are (scope has no effect)."""

    uses_pool = False

    def __call__(self, scores: torch.Tensor) -> torch.Tensor:
        return scores.clone()


class MeanNormalizer(Normalizer):
    """s / mean(s) over the pool."""

    def __call__(self, scores: torch.Tensor) -> torch.Tensor:
        return scores / scores.mean().abs().clamp_min(_EPS)


class MaxNormalizer(Normalizer):
    """s / max(|s|) over the pool."""

    def __call__(self, scores: torch.Tensor) -> torch.Tensor:
        return scores / scores.abs().max().clamp_min(_EPS)


class SumNormalizer(Normalizer):
    """s / Σ|s| over the pool."""

    def __call__(self, scores: torch.Tensor) -> torch.Tensor:
        return scores / scores.abs().sum().clamp_min(_EPS)


class L2Normalizer(Normalizer):
    """s / ‖s‖₂ over the pool."""

    def __call__(self, scores: torch.Tensor) -> torch.Tensor:
        return scores / scores.norm().clamp_min(_EPS)


class ZScoreNormalizer(Normalizer):
    """(s − mean) / std over the pool; a pool of one group (or of constant scores) maps to zeros."""

    def __call__(self, scores: torch.Tensor) -> torch.Tensor:
        if scores.numel() < 2:
            return torch.zeros_like(scores)
        return (scores - scores.mean()) / scores.std().clamp_min(_EPS)


class RankNormalizer(Normalizer):
    """Rank within the pool scaled to [0, 1] (ties broken by position, so the result is stable)."""

    def __call__(self, scores: torch.Tensor) -> torch.Tensor:
        n = scores.numel()
        if n < 2:
            return torch.zeros_like(scores, dtype=torch.float32)
        order = torch.argsort(scores, stable=True)
        ranks = torch.empty(n, dtype=torch.float32)
        ranks[order] = torch.arange(n, dtype=torch.float32)
        return ranks / (n - 1)


def normalize_scores(scores: Scores, normalizer) -> Scores:
    """Normalize scores by pools (``normalizer.params.scope``); a plain callable is applied per (layer, kind)."""
    if hasattr(normalizer, "normalize"):
        return normalizer.normalize(scores)
    return {k: normalizer(v.float()) for k, v in scores.items()}
