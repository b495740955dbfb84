"""Taylor importance from calibration gradients: first order, second order (Fisher diagonal), mix.

G is the mean over the N calibration samples of the gradient (micro-batch gradients weighted by their
sample counts, so G does not depend on the split); F is the empirical Fisher diagonal, the sample-
weighted mean over micro-batches of g_b² — exact per sample when ``per_sample`` is set (micro-batches of
one), otherwise the micro-batch Fisher, which by definition depends on the micro-batch size (E[g_b²]
shrinks toward G² as micro-batches grow). For a group (one KV head with its query heads, or one MLP
channel) over its modules m and their rows or columns r (a row of q/k/v/gate/up, a column of o/down):

* first / vector:  Σ_m Σ_r |Σ_{i∈r} w_i·G_i|      (LLM-Pruner ``vectorize``: per row, then summed)
* first / joint:   |Σ_{i∈group} w_i·G_i|           (the first-order loss change of removing the group)
* first / element: reduce_{i∈group} |w_i·G_i|      (one fp32 accumulator per prunable weight)
* second:          reduce_{i∈group} ½·w_i²·F_i     (element-level; streamed to per-group sums for sum/mean)
* mix:             reduce_{i∈group} |w_i·G_i − ½·w_i²·F_i|  (two fp32 accumulators per prunable weight)

``reduce`` is sum, mean or max over the group's elements. Only what the chosen variant needs is kept:
vector/joint and second-order sum/mean reduce each micro-batch's gradient inside the hook (linear in
the weighted sum), so no parameter-sized buffer exists.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, model_validator

from gradprune.importance.base import ImportanceEstimator, Scores, kind_of
from gradprune.models.adapters import UNGROUPED_ROLES, LayerModules, group_view, group_view3

#: roles whose groups are columns of the weight (the group's inputs); the others' groups are rows
COLUMN_ROLES = ("o", "down")
#: each order's granularity when the recipe does not name one
NATURAL_GRANULARITY = {"first": "vector", "second": "element", "mix": "element"}


class TaylorParams(BaseModel):
    """Params of the Taylor estimators."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    order: Literal["first", "second", "mix"] = "first"
    #: None: the order's own (first: vector, second and mix: element)
    granularity: Literal["vector", "joint", "element"] | None = None
    reduction: Literal["sum", "mean", "max"] = "sum"
    per_sample: bool = False

    @model_validator(mode="after")
    def _consistent(self) -> TaylorParams:
        g = self.granularity
        if self.order in ("second", "mix") and g not in (None, "element"):
            raise ValueError(f"order {self.order!r} is element-level (½·w²·F per weight, reduced by `reduction`): "
                             f"set granularity: element or leave it out")
        if self.order == "first" and (g or "vector") in ("vector", "joint") and self.reduction != "sum":
            raise ValueError(f"first-order {g or 'vector'} importance sums |w·G| terms over the group; "
                             f"reduction must be sum (or use granularity: element)")
        return self

    @property
    def resolved_granularity(self) -> str:
        """The granularity in effect."""
        return self.granularity or NATURAL_GRANULARITY[self.order]


def row_sums(values: torch.Tensor, role: str, layer: LayerModules) -> torch.Tensor:
    """``[n_groups, rows]``: the sum of ``values`` over each row (q/k/v/gate/up) or column (o/down) of the
    role's weight that the group removes; a bias element is its own row."""
    g3 = group_view3(values, role, layer)  # rows: [n, rows, in]; columns: [n, out, cols]; bias: [n, 1, rows]
    return g3.sum(dim=2) if values.dim() == 2 and role not in COLUMN_ROLES else g3.sum(dim=1)


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
        self.granularity = p.resolved_granularity
        # element-level state: one fp32 tensor per prunable weight (two for mix)
        self._element = self.granularity == "element" and (p.order in ("first", "mix") or p.reduction == "max")
        self.element_state = self._element
        self.grad_sum: dict[str, torch.Tensor] = {}
        self.sq_sum: dict[str, torch.Tensor] = {}
        self.group_sum: dict[tuple[int, str], torch.Tensor] = {}
        self.row_sum: dict[str, torch.Tensor] = {}
        self.n_samples = torch.zeros((), dtype=torch.float64)
        self.batch_samples = 1
        self._weights: dict[str, tuple[LayerModules, str]] = {}
        self._shared = None  # a MeanGradient holding Σ n_b·g_b already (the stat collectors' buffer)

    def share_mean_gradient(self, mean_grad) -> None:
        """Read Σ n_b·g_b from ``mean_grad`` (a :class:`gradprune.stats.gradient.MeanGradient` fed the same
        gradients) instead of keeping a second fp32 buffer per prunable weight."""
        if self._element and self.params.order in ("first", "mix"):
            self._shared = mean_grad

    def _grad_sum(self, name: str, layer: LayerModules, role: str) -> torch.Tensor:
        return self._shared.sums[(layer.index, role)] if self._shared is not None else self.grad_sum[name]

    def setup(self, layers: list[LayerModules]) -> None:
        """Remember the layers; accumulators are created lazily on the gradient's device."""
        super().setup(layers)
        self._by_index = {lm.index: lm for lm in layers}

    def rebind(self, layers: list[LayerModules]) -> None:
        """Scores read weights from ``layers`` (same indices and shapes, another model object)."""
        super().rebind(layers)
        self._by_index = {lm.index: lm for lm in layers}
        self._weights = {name: (self._by_index[lm.index], role) for name, (lm, role) in self._weights.items()}

    def _acc(self, store: dict, key, like: torch.Tensor) -> torch.Tensor:
        if key not in store:
            store[key] = torch.zeros(like.shape, dtype=torch.float32, device=like.device)
        return store[key]

    def observe_grad(self, layer: LayerModules, role: str, weight: torch.Tensor, grad: torch.Tensor) -> None:
        """Stream one micro-batch's gradient, weighted by its sample count, into what this variant needs."""
        p, name, n = self.params, f"{layer.index}.{role}", float(self.batch_samples)
        g = grad.float()
        self._weights[name] = (layer, role)
        if self._element:
            if p.order in ("first", "mix") and self._shared is None:
                self._acc(self.grad_sum, name, g).add_(g, alpha=n)
            if p.order in ("second", "mix"):
                self._acc(self.sq_sum, name, g).addcmul_(g, g, value=n)
            return
        if role in UNGROUPED_ROLES:
            return  # no group removes these elements
        w = weight.detach().float()
        if self.granularity == "vector":
            part = row_sums(w * g, role, layer)
            self._acc(self.row_sum, name, part).add_(part, alpha=n)
            return
        # joint first order, or second order sum/mean: per-group sums are linear over micro-batches
        contrib = w * g if p.order == "first" else (w * g).square_()
        part = group_view(contrib, role, layer).sum(dim=1)
        self._acc(self.group_sum, (layer.index, kind_of(role)), part).add_(part, alpha=n)

    def end_batch(self) -> None:
        """Count the samples (the means below divide by them)."""
        self.n_samples += self.batch_samples

    def state(self) -> dict[str, torch.Tensor]:
        """Every accumulator (all sums, so a DDP all-reduce with SUM combines them exactly)."""
        out = {f"g:{k}": v for k, v in self.grad_sum.items()}
        out.update({f"f:{k}": v for k, v in self.sq_sum.items()})
        out.update({f"s:{k[0]}.{k[1]}": v for k, v in self.group_sum.items()})
        out.update({f"r:{k}": v for k, v in self.row_sum.items()})
        out["n_samples"] = self.n_samples
        return out

    def scores(self) -> Scores:
        """Per-group scores from the accumulated means."""
        n = float(self.n_samples)
        if n == 0:
            raise RuntimeError("Taylor importance saw no calibration batch")
        p = self.params
        if self.granularity == "vector":
            out: Scores = {}
            for name, rows in self.row_sum.items():
                layer, role = self._weights[name]
                key = (layer.index, kind_of(role))
                part = (rows / n).abs_().sum(dim=1)
                out[key] = out[key] + part if key in out else part
            return {k: v.cpu() for k, v in out.items()}
        if not self._element:
            if p.order == "first":
                return {k: (v / n).abs().cpu() for k, v in self.group_sum.items()}
            counts = {} if p.reduction == "sum" else self._group_sizes()
            return {k: (0.5 * v / n / counts.get(k, 1)).cpu() for k, v in self.group_sum.items()}
        red = GroupReducer(p.reduction)
        for name, (layer, role) in self._weights.items():
            w = dict(layer.weights())[role].detach().float()
            if p.order == "first":
                el = (w * self._grad_sum(name, layer, role) / n).abs_()
            elif p.order == "second":
                el = 0.5 * w.square() * self.sq_sum[name] / n
            else:
                el = (w * self._grad_sum(name, layer, role) / n - 0.5 * w.square() * self.sq_sum[name] / n).abs_()
            red.add(layer, role, el)
        return red.result()

    def _group_sizes(self) -> dict[tuple[int, str], int]:
        sizes: dict[tuple[int, str], int] = {}
        for layer, role in self._weights.values():
            w = dict(layer.weights())[role]
            key = (layer.index, kind_of(role))
            sizes[key] = sizes.get(key, 0) + group_view(w.detach(), role, layer).shape[1]
        return sizes
