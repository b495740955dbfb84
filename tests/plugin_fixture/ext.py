"""A third-party plugin module as an outside package would ship it (used through entry points)."""

from __future__ import annotations

import torch

from gradprune.importance.base import ImportanceEstimator
from gradprune.stats.gradient import StatCollector


class GradSignImportance(ImportanceEstimator):
    """Counts how often w·g is negative per group (a made-up estimator for the extension test)."""

    reads = frozenset({"gradients"})

    def observe_grad(self, layer, role, weight, grad):
        from gradprune.importance.base import kind_of
        from gradprune.models.adapters import group_view

        part = group_view((weight.detach() * grad < 0).float(), role, layer).sum(1)
        self.accumulator(f"{layer.index}.{kind_of(role)}", part.shape).add_(part)

    def scores(self):
        return {(int(n.split(".")[0]), n.split(".")[1]): t.float().cpu() for n, (t, _) in self.state().items()}


class GradL1Collector(StatCollector):
    """Per-layer mean |g| (a made-up collector for the extension test)."""

    reads = frozenset({"gradients"})

    def observe_grad(self, layer, role, weight, grad):
        self.accumulator("s")[layer.index] += grad.abs().sum(dtype=torch.float32).double()
        self.accumulator("n")[layer.index] += grad.numel()

    def per_layer(self):
        return (self.accumulator("s") / self.accumulator("n").clamp_min(1)).tolist()
