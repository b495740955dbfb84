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
    """Base class: per-layer streaming state, combined across processes by ``state`` ops.

    State is allocated on the first gradient's device (``_zeros``), so it lives where the gradients
    are whatever device the model was moved to after ``setup``; nothing is copied to the host per hook.
    """

    Params = NoParams
    name: ClassVar[str] = "stat"
    #: how the cross-layer ratio treats signed values
    ratio_of_abs: ClassVar[bool] = True

    def __init__(self, params=None) -> None:
        self.params = params if params is not None else self.Params()
        self.n_layers = 0
        self._state: dict[str, torch.Tensor] = {}

    def setup(self, n_layers: int, device: torch.device | None = None) -> None:
        """Prepare O(layers) state for ``n_layers`` (allocated lazily on the gradients' device)."""
        self.n_layers = n_layers
        self._state = {}

    def _zeros(self, key: str, like: torch.Tensor | None = None, shape: tuple = ()) -> torch.Tensor:
        """The fp64 accumulator ``key`` ([n_layers] unless ``shape``), created on ``like``'s device."""
        if key not in self._state:
            device = like.device if like is not None else "cpu"
            self._state[key] = torch.zeros(shape or (self.n_layers,), dtype=torch.float64, device=device)
        return self._state[key]

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

    def observe(self, layer: int, role: str, grad: torch.Tensor, moments: Moments) -> None:
        self._zeros("s", grad)[layer] += moments.sum.double()
        self._zeros("ss", grad)[layer] += moments.sumsq.double()
        self._zeros("n", grad)[layer] += moments.count

    def state(self) -> dict[str, tuple[torch.Tensor, str]]:
        return {k: (self._zeros(k), "sum") for k in ("s", "ss", "n")}


class GradNormCollector(StatCollector):
    """RMS over micro-batches of the layer's gradient Frobenius norm."""

    name = "grad_norm"

    def observe(self, layer: int, role: str, grad: torch.Tensor, moments: Moments) -> None:
        self._zeros("batch_sq", grad)[layer] += moments.sumsq.double()

    def end_batch(self) -> None:
        if "batch_sq" not in self._state:
            return  # no gradient seen yet: nothing to fold (and no device to allocate on)
        batch = self._state["batch_sq"]
        self._zeros("total_sq", batch).add_(batch)
        batch.zero_()
        self._zeros("batches", batch, shape=(1,)).add_(1)

    def state(self) -> dict[str, tuple[torch.Tensor, str]]:
        return {"total_sq": (self._zeros("total_sq"), "sum"), "batches": (self._zeros("batches", shape=(1,)), "sum")}

    def per_layer(self) -> list[float]:
        return (self._zeros("total_sq") / self._zeros("batches", shape=(1,)).clamp_min(1)).sqrt().tolist()


class GradMeanCollector(_Sums):
    """Mean of all gradient elements of the layer (signed)."""

    name = "grad_mean"

    def per_layer(self) -> list[float]:
        return (self._zeros("s") / self._zeros("n").clamp_min(1)).tolist()


class GradStdCollector(_Sums):
    """Population std of all gradient elements of the layer (fp64 sums)."""

    name = "grad_std"

    def per_layer(self) -> list[float]:
        n = self._zeros("n").clamp_min(1)
        mean = self._zeros("s") / n
        return (self._zeros("ss") / n - mean.square()).clamp_min(0).sqrt().tolist()


class GradMaxCollector(StatCollector):
    """Largest absolute gradient element of the layer."""

    name = "grad_max"

    def observe(self, layer: int, role: str, grad: torch.Tensor, moments: Moments) -> None:
        m = self._zeros("m", grad)
        big = torch.maximum(moments.max.abs(), moments.min.abs()).double()
        m[layer] = torch.maximum(m[layer], big)

    def state(self) -> dict[str, tuple[torch.Tensor, str]]:
        return {"m": (self._zeros("m"), "max")}

    def per_layer(self) -> list[float]:
        return self._zeros("m").tolist()
