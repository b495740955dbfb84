"""``grad_l1``: per-layer mean |g| over every prunable weight and micro-batch."""

from __future__ import annotations

import torch

from gradprune.models.adapters import LayerModules
from gradprune.stats.gradient import Moments, StatCollector


class GradL1Collector(StatCollector):
    """Mean absolute gradient per layer (the run records it per layer and as ``<name>_ratio``, under the
    entry-point name: ``grad_l1``)."""

    def setup(self, layers: list[LayerModules], device: torch.device | None = None) -> None:
        super().setup(layers, device)  # sets n_layers: one slot per layer index
        self.total = torch.zeros(self.n_layers, dtype=torch.float64, device=device)
        self.count = torch.zeros(self.n_layers, dtype=torch.float64, device=device)

    def observe(self, layer: LayerModules, role: str, grad: torch.Tensor, moments: Moments) -> None:
        self.total[layer.index] += grad.detach().abs().sum().double()
        self.count[layer.index] += moments.count

    def state(self) -> dict[str, tuple[torch.Tensor, str]]:
        return {"total": (self.total, "sum"), "count": (self.count, "sum")}

    def per_layer(self) -> list[float]:
        return (self.total / self.count.clamp_min(1)).tolist()
