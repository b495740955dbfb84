"""``grad_l1``: per-layer mean |g| over every prunable weight and micro-batch."""

from __future__ import annotations

import torch

from gradprune.stats.gradient import StatCollector


class GradL1Collector(StatCollector):
    """Mean absolute gradient per layer (the run records it per layer and as ``<name>_ratio``, under the
    entry-point name: ``grad_l1``)."""

    def setup(self, n_layers: int, device: torch.device) -> None:
        super().setup(n_layers, device)
        self.total = torch.zeros(n_layers, dtype=torch.float64, device=device)
        self.count = torch.zeros(n_layers, dtype=torch.float64, device=device)

    def observe(self, layer: int, role: str, grad: torch.Tensor, moments) -> None:
        self.total[layer] += grad.detach().abs().sum().double()
        self.count[layer] += grad.numel()

    def state(self) -> dict[str, tuple[torch.Tensor, str]]:
        return {"total": (self.total, "sum"), "count": (self.count, "sum")}

    def per_layer(self) -> list[float]:
        return (self.total / self.count.clamp_min(1)).tolist()
