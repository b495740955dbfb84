"""FLAP's structured criterion: how much a group's input channels fluctuate, weighed by their weights.

An et al., "Fluctuation-based Adaptive Structured Pruning for Large Language Models" (AAAI 2024), metric
"WIFV" of its public code (``lib/prune.py``): input channel j of o_proj or down_proj scores

    s_j = var(x_j) · ‖W[:, j]‖²

the sample variance (1/(N−1)) of the channel over every calibration token, times the squared norm of the
weight column it feeds: removing the channel and adding its mean to the bias (FLAP's compensation) loses
about that much of the output. An MLP group is one channel; a KV group owns the o_proj columns of its
query heads (``n_rep · head_dim`` consecutive channels).

``standardize`` (default, FLAP's adaptive structure "AL-AM"): each layer's channel scores of one module are
standardized, (s − mean) / std over that layer's channels, and a group scores the mean of its channels'
standardized values, so that one global ranking can compare layers and modules. FLAP standardizes the
channels before they are grouped; a normalizer sees group scores only, which with 2–8 KV groups per layer
would be too few to standardize, so this step is the estimator's. Rank these scores as FLAP does with
``normalizer.name: none``. Without ``standardize`` a group scores the sum of its channels' s_j.

Not done: FLAP's bias compensation (the pruned channels' mean input times their columns, added to the
output projection's bias), and the public code's squaring of o_proj's channel scores before standardizing.

The variance is streamed as Σx, Σx² and the token count, in float64 (the squares of fp32 and bf16 values are
exact there): sums, so the score does not depend on how the tokens were split into micro-batches, and the
state is summed across processes like every estimator's.
"""

from __future__ import annotations

import torch
from pydantic import BaseModel, ConfigDict

from gradprune.importance.base import ImportanceEstimator, Scores
from gradprune.models.adapters import LayerModules

#: the inputs FLAP measures: the projections whose input channels are the groups' channels
ROLES = (("o", "attn"), ("down", "mlp"))
#: float64 elements per chunk of a micro-batch's input converted at once (bounds the temporary copy)
CHUNK_ELEMENTS = 1 << 22
_EPS = 1e-12


class FlapParams(BaseModel):
    """``standardize``: FLAP's per-layer standardization of the channel scores (see the module)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    standardize: bool = True


class FlapImportance(ImportanceEstimator):
    """FLAP: input-channel variance × squared weight-column norm of o_proj / down_proj, per layer standardized."""

    Params = FlapParams
    input_roles = ("o", "down")

    def observe_input(self, layer: LayerModules, role: str, x: torch.Tensor) -> None:
        """Add one micro-batch's input of ``o`` or ``down`` ([..., in_features]) to the channel sums."""
        flat = x.detach().reshape(-1, x.shape[-1])
        # Σx, Σx² per input channel and the token count, in one float64 accumulator summed across processes
        acc = self.accumulator(f"{layer.index}.{role}", (2 * flat.shape[1] + 1,))
        s, sq = acc[: flat.shape[1]], acc[flat.shape[1]: -1]
        for chunk in flat.split(max(1, CHUNK_ELEMENTS // max(1, flat.shape[1]))):
            d = chunk.double()
            s += d.sum(0)
            sq += d.square().sum(0)
        acc[-1] += flat.shape[0]

    def channel_scores(self, layer: LayerModules, role: str) -> torch.Tensor:
        """``var(x_j) · ‖W[:, j]‖²`` for every input channel j of the role's projection (float64)."""
        acc = self.state()[f"{layer.index}.{role}"][0]
        n_in = (acc.numel() - 1) // 2
        s, sq, n = acc[:n_in], acc[n_in: -1], acc[-1]
        if n < 2:
            raise RuntimeError(f"FLAP needs at least 2 calibration tokens (layer {layer.index} saw {int(n)})")
        var = ((sq - s * s / n) / (n - 1)).clamp_min(0)
        w = layer.weights()[role].detach()
        return var * w.to(var.device, torch.float64).square().sum(0)

    def scores(self) -> Scores:
        """Per group: the mean of its channels' standardized scores, or (``standardize: false``) their sum."""
        if not self.state():
            raise RuntimeError("FLAP saw no calibration batch")
        out: Scores = {}
        for layer in self.layers:
            for role, kind in ROLES:
                ch = self.channel_scores(layer, role)
                # a group's input channels are consecutive: one MLP channel, or the columns of a KV group's
                # query heads (query head h reads KV head h // n_rep)
                groups = ch.view(layer.n_groups(role), -1)
                if self.params.standardize:
                    groups = ((groups - ch.mean()) / ch.std().clamp_min(_EPS)).mean(1)
                else:
                    groups = groups.sum(1)
                out[(layer.index, kind)] = groups.float().cpu()
        return out
