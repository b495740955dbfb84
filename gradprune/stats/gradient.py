"""Streaming per-layer gradient statistics: norm, mean, std, max.

Per micro-batch each prunable weight's gradient is reduced to four fp32 scalars (sum, sum of
squares, min, max); they are folded per layer into fp64 totals, so memory is O(layers) and the
std does not suffer from catastrophic cancellation over millions of elements. Definitions, for
layer l over all its prunable weights and all micro-batches b:

* grad_norm = sqrt(mean_b ‖g_{l,b}‖²)   (RMS over micro-batches of the layer's gradient norm)
* grad_mean = Σ g / count               (signed; cross-layer ratios use |grad_mean|)
* grad_std  = sqrt(Σ g²/count − mean²)  (population std over all elements and micro-batches)
* grad_max  = max |g|
"""

from __future__ import annotations

from typing import ClassVar

import torch

from gradprune.registry import NoParams


class Moments:
    """fp32 per-tensor reductions of one gradient, computed once and shared by every collector."""

    __slots__ = ("sum", "sumsq", "min", "max", "count")

    def __init__(self, grad: torch.Tensor) -> None:
        g = grad if grad.dtype == torch.float32 else grad.float()
        self.sum = g.sum()
        self.sumsq = torch.linalg.vector_norm(g).square()
        mn, mx = torch.aminmax(g) if g.numel() else (g.new_zeros(()), g.new_zeros(()))
        self.min, self.max = mn, mx
        self.count = g.numel()


class StatCollector:
    """Base class: per-layer streaming state, combined across processes by ``state`` ops."""

    Params = NoParams
    name: ClassVar[str] = "stat"
    #: how the cross-layer ratio treats signed values
    ratio_of_abs: ClassVar[bool] = True

    def __init__(self, params=None) -> None:
        self.params = params if params is not None else self.Params()
        self.n_layers = 0

    def setup(self, n_layers: int, device: torch.device) -> None:
        """Allocate O(layers) state."""
        self.n_layers = n_layers

    def observe(self, layer: int, role: str, grad: torch.Tensor, moments: Moments) -> None:
        """One micro-batch's gradient of one prunable weight of ``layer``."""

    def end_batch(self) -> None:
        """Called after each micro-batch's backward."""

    def state(self) -> dict[str, tuple[torch.Tensor, str]]:
        """Tensors to all-reduce across processes, each with its op: ``sum`` or ``max``."""
        return {}

    def per_layer(self) -> list[float]:
        """The statistic for every layer, in layer order."""
        raise NotImplementedError


class _Sums(StatCollector):
    """Shared fp64 per-layer totals of sum, sum of squares and element count."""

    def setup(self, n_layers: int, device: torch.device) -> None:
        super().setup(n_layers, device)
        self.s = torch.zeros(n_layers, dtype=torch.float64, device=device)
        self.ss = torch.zeros(n_layers, dtype=torch.float64, device=device)
        self.n = torch.zeros(n_layers, dtype=torch.float64, device=device)

    def observe(self, layer: int, role: str, grad: torch.Tensor, moments: Moments) -> None:
        self.s[layer] += moments.sum.double()
        self.ss[layer] += moments.sumsq.double()
        self.n[layer] += moments.count

    def state(self) -> dict[str, tuple[torch.Tensor, str]]:
        return {"s": (self.s, "sum"), "ss": (self.ss, "sum"), "n": (self.n, "sum")}


class GradNormCollector(StatCollector):
    """RMS over micro-batches of the layer's gradient Frobenius norm."""

    name = "grad_norm"

    def setup(self, n_layers: int, device: torch.device) -> None:
        super().setup(n_layers, device)
        self.batch_sq = torch.zeros(n_layers, dtype=torch.float64, device=device)
        self.total_sq = torch.zeros(n_layers, dtype=torch.float64, device=device)
        self.batches = torch.zeros((), dtype=torch.float64, device=device)

    def observe(self, layer: int, role: str, grad: torch.Tensor, moments: Moments) -> None:
        self.batch_sq[layer] += moments.sumsq.double()

    def end_batch(self) -> None:
        self.total_sq += self.batch_sq
        self.batch_sq.zero_()
        self.batches += 1

    def state(self) -> dict[str, tuple[torch.Tensor, str]]:
        return {"total_sq": (self.total_sq, "sum"), "batches": (self.batches, "sum")}

    def per_layer(self) -> list[float]:
        return (self.total_sq / self.batches.clamp_min(1)).sqrt().tolist()


class GradMeanCollector(_Sums):
    """Mean of all gradient elements of the layer (signed)."""

    name = "grad_mean"

    def per_layer(self) -> list[float]:
        return (self.s / self.n.clamp_min(1)).tolist()


class GradStdCollector(_Sums):
    """Population std of all gradient elements of the layer (fp64 sums)."""

    name = "grad_std"

    def per_layer(self) -> list[float]:
        n = self.n.clamp_min(1)
        mean = self.s / n
        return (self.ss / n - mean.square()).clamp_min(0).sqrt().tolist()


class GradMaxCollector(StatCollector):
    """Largest absolute gradient element of the layer."""

    name = "grad_max"

    def setup(self, n_layers: int, device: torch.device) -> None:
        super().setup(n_layers, device)
        self.m = torch.zeros(n_layers, dtype=torch.float64, device=device)

    def observe(self, layer: int, role: str, grad: torch.Tensor, moments: Moments) -> None:
        big = torch.maximum(moments.max.abs(), moments.min.abs()).double()
        self.m[layer] = torch.maximum(self.m[layer], big)

    def state(self) -> dict[str, tuple[torch.Tensor, str]]:
        return {"m": (self.m, "max")}

    def per_layer(self) -> list[float]:
        return self.m.tolist()
