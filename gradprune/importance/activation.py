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

    input_roles = ("o", "down")

    def observe_input(self, layer: LayerModules, role: str, x: torch.Tensor) -> None:
        """Accumulate Σ_tokens x_j² per input channel in fp32."""
        flat = x.detach().reshape(-1, x.shape[-1]).float()
        self.accumulator(f"{layer.index}.{role}", (x.shape[-1],), dtype=torch.float32).add_(flat.square().sum(0))

    def scores(self) -> Scores:
        """Per-group Σ |W_ij|·‖X_j‖."""
        sq = self.state()
        if not sq:
            raise RuntimeError("activation importance saw no calibration batch")
        out: Scores = {}
        for layer in self.layers:
            for role, kind in (("o", "attn"), ("down", "mlp")):
                w = layer.weights()[role].detach().float()
                norm = sq[f"{layer.index}.{role}"][0].sqrt()
                out[(layer.index, kind)] = group_sum(w.abs() * norm, role, layer).cpu()
        return out
