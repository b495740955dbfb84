"""Taylor importance from calibration gradients: first order, second order (Fisher diagonal), mix.

With G = mean over micro-batches of the gradient and F = mean over micro-batches of g² (the
empirical Fisher diagonal; exact per-sample when ``per_sample`` is set, i.e. micro-batches of one):

* first / vector:  |Σ_group w·G|                       (LLM-Pruner "vectorwise")
* first / element: reduce_group |w·G|                  (one fp32 accumulator per prunable weight)
* second:          reduce_group ½·w²·F                 (streamed to per-group sums for sum/mean)
* mix / element:   reduce_group |w·G − ½·w²·F|          (two fp32 accumulators per prunable weight)

Only what the chosen variant needs is kept: group-level variants reduce each micro-batch's
gradient to per-group sums inside the gradient hook, so no parameter-sized buffer exists.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, model_validator

from gradprune.importance.base import ImportanceEstimator, Scores, kind_of
from gradprune.models.adapters import LayerModules, group_view


class TaylorParams(BaseModel):
    """Params of the Taylor estimators."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    order: Literal["first", "second", "mix"] = "first"
    granularity: Literal["vector", "element"] = "vector"
    reduction: Literal["sum", "mean", "max"] = "sum"
    per_sample: bool = False

    @model_validator(mode="after")
    def _consistent(self) -> TaylorParams:
        if self.order == "mix" and self.granularity != "element":
            raise ValueError("order 'mix' is element-level: set granularity: element")
        if self.order == "first" and self.granularity == "vector" and self.reduction != "sum":
            raise ValueError("first-order vector importance is |Σ w·g| over the group; reduction must be sum")
        return self


class GroupReducer:
    """Combines per-role element scores into per-group scores with sum, mean or max."""

    def __init__(self, reduction: str) -> None:
        self.reduction = reduction
        self.acc: dict[tuple[int, str], torch.Tensor] = {}
        self.count: dict[tuple[int, str], int] = {}

    def add(self, layer: LayerModules, role: str, values: torch.Tensor) -> None:
        """Fold one role's element values (shaped like its weight) into its layer's group scores."""
        v = group_view(values, role, layer)
        part = v.amax(dim=1) if self.reduction == "max" else v.sum(dim=1)
        key = (layer.index, kind_of(role))
        if key not in self.acc:
            self.acc[key], self.count[key] = part.float().clone(), v.shape[1]
        else:
            self.acc[key] = torch.maximum(self.acc[key], part) if self.reduction == "max" else self.acc[key] + part
            self.count[key] += v.shape[1]

    def result(self) -> Scores:
        """Per-group scores; ``mean`` divides by the number of elements in each group."""
        if self.reduction == "mean":
            return {k: (a / self.count[k]).cpu() for k, a in self.acc.items()}
        return {k: a.cpu() for k, a in self.acc.items()}


class TaylorImportance(ImportanceEstimator):
    """Taylor expansion of the loss change when a group is removed (first order, Fisher, or mix)."""

    Params = TaylorParams

    def __init__(self, params: TaylorParams | None = None) -> None:
        super().__init__(params)
        p = self.params
        self.per_sample = p.per_sample
        # element-level state: one fp32 tensor per prunable weight (two for mix)
        self._element = p.granularity == "element" and p.order in ("first", "mix") or (
            p.order == "second" and p.reduction == "max")
        self.grad_sum: dict[str, torch.Tensor] = {}
        self.sq_sum: dict[str, torch.Tensor] = {}
        self.group_sum: dict[tuple[int, str], torch.Tensor] = {}
        self.n_batches = torch.zeros((), dtype=torch.float64)
        self._weights: dict[str, tuple[LayerModules, str]] = {}

    def setup(self, layers: list[LayerModules]) -> None:
        """Remember the layers; accumulators are created lazily on the gradient's device."""
        super().setup(layers)
        self._by_index = {lm.index: lm for lm in layers}

    def _acc(self, store: dict, key, like: torch.Tensor) -> torch.Tensor:
        if key not in store:
            store[key] = torch.zeros(like.shape, dtype=torch.float32, device=like.device)
        return store[key]

    def observe_grad(self, layer: LayerModules, role: str, weight: torch.Tensor, grad: torch.Tensor) -> None:
        """Stream one micro-batch's gradient into the accumulators this variant needs."""
        p, name = self.params, f"{layer.index}.{role}"
        g = grad.float()
        w = weight.detach().float()
        self._weights[name] = (layer, role)
        if p.order in ("first", "mix") and self._element:
            self._acc(self.grad_sum, name, g).add_(g)
        if p.order in ("second", "mix") and self._element:
            self._acc(self.sq_sum, name, g).addcmul_(g, g)
        if not self._element:
            # group-level: reduce this batch to per-group sums at once (sum is linear over batches)
            contrib = w * g if p.order == "first" else (w * g).square_()
            part = group_view(contrib, role, layer).sum(dim=1)
            key = (layer.index, kind_of(role))
            self._acc(self.group_sum, key, part).add_(part)

    def end_batch(self) -> None:
        """Count micro-batches (the means below divide by it)."""
        self.n_batches += 1

    def state(self) -> dict[str, torch.Tensor]:
        """Every accumulator (all sums, so a DDP all-reduce with SUM combines them exactly)."""
        out = {f"g:{k}": v for k, v in self.grad_sum.items()}
        out.update({f"f:{k}": v for k, v in self.sq_sum.items()})
        out.update({f"s:{k[0]}.{k[1]}": v for k, v in self.group_sum.items()})
        out["n_batches"] = self.n_batches
        return out

    def scores(self) -> Scores:
        """Per-group scores from the accumulated means."""
        n = float(self.n_batches)
        if n == 0:
            raise RuntimeError("Taylor importance saw no calibration batch")
        p = self.params
        if not self._element:
            if p.order == "first":
                return {k: (v / n).abs().cpu() for k, v in self.group_sum.items()}
            counts = {} if p.reduction == "sum" else self._group_sizes()
            return {k: (0.5 * v / n / counts.get(k, 1)).cpu() for k, v in self.group_sum.items()}
        red = GroupReducer(p.reduction)
        for name, (layer, role) in self._weights.items():
            w = dict(layer.weights())[role].detach().float()
            if p.order == "first":
                el = (w * self.grad_sum[name] / n).abs_()
            elif p.order == "second":
                el = 0.5 * w.square() * self.sq_sum[name] / n
            else:
                el = (w * self.grad_sum[name] / n - 0.5 * w.square() * self.sq_sum[name] / n).abs_()
            red.add(layer, role, el)
        return red.result()

    def _group_sizes(self) -> dict[tuple[int, str], int]:
        sizes: dict[tuple[int, str], int] = {}
        for layer, role in self._weights.values():
            w = dict(layer.weights())[role]
            key = (layer.index, kind_of(role))
            sizes[key] = sizes.get(key, 0) + group_view(w.detach(), role, layer).shape[1]
        return sizes
