"""``grad_l1``: per-layer mean |g| over every prunable weight and micro-batch."""

from __future__ import annotations

import torch

from gradprune.models.adapters import LayerModules
from gradprune.stats.gradient import StatCollector


class GradL1Collector(StatCollector):
    """Mean absolute gradient per layer (the run records it per layer and as ``<name>_ratio``, under the
    entry-point name: ``grad_l1``)."""

    reads = frozenset({"gradients"})

    def observe_grad(self, layer: LayerModules, role: str, weight: torch.Tensor, grad: torch.Tensor) -> None:
        # accumulators made with self.accumulator are summed across processes (one slot per layer index)
        self.accumulator("total")[layer.index] += grad.detach().abs().sum(dtype=torch.float32).double()
        self.accumulator("count")[layer.index] += grad.numel()

    def per_layer(self) -> list[float]:
        return (self.accumulator("total") / self.accumulator("count").clamp_min(1)).tolist()
