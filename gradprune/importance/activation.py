"""Activation-based baseline (Wanda/FLAP style): |W| weighted by the input-channel norm ‖X_j‖.

Only the inputs of ``o_proj`` (per attention channel) and ``down_proj`` (per MLP channel) are
needed: a group's score is Σ |W_ij|·‖X_j‖ over the columns it owns. Needs no backward pass.
"""

from __future__ import annotations

import torch

from gradprune.importance.base import ImportanceEstimator, Scores
from gradprune.models.adapters import LayerModules, group_sum


class ActivationImportance(ImportanceEstimator):
    """Σ_group |W|·‖X‖ on o_proj / down_proj input channels, from forward passes only."""

    needs_gradients = False
    needs_activations = True

    def __init__(self, params=None) -> None:
        super().__init__(params)
        self.sq: dict[tuple[int, str], torch.Tensor] = {}

    def observe_input(self, layer: LayerModules, role: str, x: torch.Tensor) -> None:
        """Accumulate Σ_tokens x_j² per input channel in fp32."""
        flat = x.detach().reshape(-1, x.shape[-1]).float()
        s = flat.square().sum(0)
        key = (layer.index, role)
        self.sq[key] = self.sq[key] + s if key in self.sq else s

    def state(self) -> dict[str, torch.Tensor]:
        """Sums of squares (combine by SUM across processes)."""
        return {f"{k[0]}.{k[1]}": v for k, v in self.sq.items()}

    def scores(self) -> Scores:
        """Per-group Σ |W_ij|·‖X_j‖."""
        if not self.sq:
            raise RuntimeError("activation importance saw no calibration batch")
        out: Scores = {}
        for layer in self.layers:
            for role, kind in (("o", "attn"), ("down", "mlp")):
                w = dict(layer.weights())[role].detach().float()
                norm = self.sq[(layer.index, role)].sqrt()
                out[(layer.index, kind)] = group_sum(w.abs() * norm, role, layer).cpu()
        return out
