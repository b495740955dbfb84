"""A third-party plugin module as an outside package would ship it (used through entry points)."""

from __future__ import annotations

import torch

from gradprune.importance.base import ImportanceEstimator
from gradprune.stats.gradient import StatCollector


class GradSignImportance(ImportanceEstimator):
    """Counts how often w·g is negative per group (a made-up estimator for the extension test)."""

    def __init__(self, params=None):
        super().__init__(params)
        self.acc = {}

    def observe_grad(self, layer, role, weight, grad):
        from gradprune.importance.base import kind_of
        from gradprune.models.adapters import group_view

        part = group_view((weight.detach() * grad < 0).float(), role, layer).sum(1)
        key = (layer.index, kind_of(role))
        self.acc[key] = self.acc[key] + part if key in self.acc else part

    def scores(self):
        return {k: v.cpu() for k, v in self.acc.items()}


class GradL1Collector(StatCollector):
    """Per-layer mean |g| (a made-up collector for the extension test)."""

    def setup(self, layers, device=None):
        super().setup(layers, device)
        self.s = torch.zeros(self.n_layers, dtype=torch.float64)
        self.n = torch.zeros(self.n_layers, dtype=torch.float64)

    def observe(self, layer, role, grad, moments):
        self.s[layer.index] += float(grad.abs().sum())
        self.n[layer.index] += grad.numel()

    def state(self):
        return {"s": (self.s, "sum"), "n": (self.n, "sum")}

    def per_layer(self):
        return (self.s / self.n.clamp_min(1)).tolist()
