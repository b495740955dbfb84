"""The accumulator under the Taylor estimators: sample-weighted sums of calibration gradients.

Every micro-batch b of n_b samples adds n_b·(its contribution) to a sum, so that dividing by N = Σ n_b
gives a mean over samples whatever the split. What is summed depends on the level a formula is scored at:

* element: the gradient moments Σ n_b·g_b and Σ n_b·g_b², one fp32 tensor per prunable weight each (only
  those the formula reads; Σ n_b·g_b can be read from the stat collectors' :class:`MeanGradient`);
* rows / groups: the formula's term, already summed over each row (column) or each group. A Taylor term
  is linear in the moments, so these per-row or per-group sums are linear over micro-batches and no
  parameter-sized buffer exists.

The formulas themselves live in :mod:`gradprune.importance.taylor`; this module never states one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from gradprune.importance.base import ImportanceEstimator, Scores, kind_of
from gradprune.models.adapters import UNGROUPED_ROLES, LayerModules, group_sum, group_view3

if TYPE_CHECKING:
    from gradprune.importance.taylor import TaylorFormula

#: roles whose groups are columns of the weight (the group's inputs); the others' groups are rows
COLUMN_ROLES = ("o", "down")
#: the levels a formula's term can be summed at before it becomes a score
LEVELS = ("element", "rows", "groups")


def row_sums(values: torch.Tensor, role: str, layer: LayerModules) -> torch.Tensor:
    """``[n_groups, rows]``: the sum of ``values`` over each row (q/k/v/gate/up) or column (o/down) of the
    role's weight that the group removes; a bias element is its own row."""
    g3 = group_view3(values, role, layer)  # rows: [n, rows, in]; columns: [n, out, cols]; bias: [n, 1, rows]
    return g3.sum(dim=2) if values.dim() == 2 and role not in COLUMN_ROLES else g3.sum(dim=1)


def group_size(role: str, layer: LayerModules) -> int:
    """Number of elements of the role's weight that one group removes."""
    w = layer.weights()[role].detach()
    _, a, b = group_view3(w, role, layer).shape
    return a * b


class GroupReducer:
    """Combines per-role element scores into per-group scores with sum, mean or max."""

    def __init__(self, reduction: str) -> None:
        self.reduction = reduction
        self.acc: dict[tuple[int, str], torch.Tensor] = {}
        self.count: dict[tuple[int, str], int] = {}

    def add(self, layer: LayerModules, role: str, values: torch.Tensor) -> None:
        """Fold one role's element values (shaped like its weight) into its layer's group scores."""
        v = group_view3(values, role, layer)
        # over the 3-d view: a flat [n_groups, m] view of o_proj's groups would copy it
        part = v.amax(dim=(1, 2)) if self.reduction == "max" else group_sum(values, role, layer)
        key, size = (layer.index, kind_of(role)), v.shape[1] * v.shape[2]
        if key not in self.acc:
            self.acc[key], self.count[key] = part.float().clone(), size
        else:
            self.acc[key] = torch.maximum(self.acc[key], part) if self.reduction == "max" else self.acc[key] + part
            self.count[key] += size

    def result(self) -> Scores:
        """Per-group scores; ``mean`` divides by the number of elements in each group."""
        if self.reduction == "mean":
            return {k: (a / self.count[k]).cpu() for k, a in self.acc.items()}
        return {k: a.cpu() for k, a in self.acc.items()}


def _zeros_like_in(store: dict, key, like: torch.Tensor) -> torch.Tensor:
    if key not in store:
        store[key] = torch.zeros(like.shape, dtype=torch.float32, device=like.device)
    return store[key]


class GradientSums(ImportanceEstimator):
    """Streams calibration gradients into the sums ``formula`` needs at ``level``; scores them with it.

    ``level`` is ``element``, ``rows`` or ``groups`` (see the module docstring); ``reduction`` (sum, mean
    or max) combines element or group values into one score per group.
    """

    def __init__(self, params, formula: TaylorFormula, level: str, reduction: str) -> None:
        super().__init__(params)
        if level not in LEVELS:
            raise ValueError(f"level {level!r}; expected one of {LEVELS}")
        self.formula, self.level, self.reduction = formula, level, reduction
        # element level: one fp32 tensor per prunable weight and moment the formula reads
        self.element_state = level == "element"
        self.grad_sum: dict[str, torch.Tensor] = {}  # Σ n_b·g_b
        self.sq_sum: dict[str, torch.Tensor] = {}  # Σ n_b·g_b²
        self.row_sum: dict[str, torch.Tensor] = {}  # Σ n_b·(term summed per row)
        self.group_sums: dict[tuple[int, str], torch.Tensor] = {}  # Σ n_b·(term summed per group)
        self.n_samples = torch.zeros((), dtype=torch.float64)
        self.batch_samples = 1
        self._weights: dict[str, tuple[LayerModules, str]] = {}
        self._by_index: dict[int, LayerModules] = {}
        self._shared = None  # a MeanGradient holding Σ n_b·g_b already (the stat collectors' buffer)

    def share_mean_gradient(self, mean_grad) -> None:
        """Read Σ n_b·g_b from ``mean_grad`` (a :class:`gradprune.stats.gradient.MeanGradient` fed the same
        gradients) instead of keeping a second fp32 buffer per prunable weight."""
        if self.element_state and self.formula.uses_grad:
            self._shared = mean_grad

    def setup(self, layers: list[LayerModules]) -> None:
        """Remember the layers; accumulators are created lazily on the gradient's device."""
        super().setup(layers)
        self._by_index = {lm.index: lm for lm in layers}

    def rebind(self, layers: list[LayerModules]) -> None:
        """Scores read weights from ``layers`` (same indices and shapes, another model object)."""
        super().rebind(layers)
        self._by_index = {lm.index: lm for lm in layers}
        self._weights = {name: (self._by_index[lm.index], role) for name, (lm, role) in self._weights.items()}

    def observe_grad(self, layer: LayerModules, role: str, weight: torch.Tensor, grad: torch.Tensor) -> None:
        """Stream one micro-batch's gradient, weighted by its sample count, into what this level needs."""
        if role in UNGROUPED_ROLES:
            return  # no group removes these elements
        f, name, n = self.formula, f"{layer.index}.{role}", float(self.batch_samples)
        g = grad.float()
        self._weights[name] = (layer, role)
        if self.level == "element":
            if f.uses_grad and self._shared is None:
                _zeros_like_in(self.grad_sum, name, g).add_(g, alpha=n)
            if f.uses_sq:
                _zeros_like_in(self.sq_sum, name, g).addcmul_(g, g, value=n)
            return
        # the term of this micro-batch's moments (g_b, g_b²): linear in them, so its sums stream
        term = f.term(weight.detach().float(), g if f.uses_grad else None, g * g if f.uses_sq else None)
        if self.level == "rows":
            part = row_sums(term, role, layer)
            _zeros_like_in(self.row_sum, name, part).add_(part, alpha=n)
        else:
            part = group_sum(term, role, layer)
            _zeros_like_in(self.group_sums, (layer.index, kind_of(role)), part).add_(part, alpha=n)

    def end_batch(self) -> None:
        """Count the samples (the means below divide by them)."""
        self.n_samples += self.batch_samples

    def state(self) -> dict[str, torch.Tensor]:
        """Every accumulator (all sums, so a DDP all-reduce with SUM combines them exactly)."""
        out = {f"g:{k}": v for k, v in self.grad_sum.items()}
        out.update({f"f:{k}": v for k, v in self.sq_sum.items()})
        out.update({f"s:{k[0]}.{k[1]}": v for k, v in self.group_sums.items()})
        out.update({f"r:{k}": v for k, v in self.row_sum.items()})
        out["n_samples"] = self.n_samples
        return out

    def scores(self) -> Scores:
        """Per-group scores: the formula's score of each mean term, reduced over the group."""
        n = float(self.n_samples)
        if n == 0:
            raise RuntimeError("Taylor importance saw no calibration batch")
        if self.level == "element":
            return self._element_scores(n)
        if self.level == "rows":
            out: Scores = {}
            for name, rows in self.row_sum.items():
                layer, role = self._weights[name]
                key = (layer.index, kind_of(role))
                part = self.formula.score(rows / n).sum(dim=1)
                out[key] = out[key] + part if key in out else part
            return {k: v.cpu() for k, v in out.items()}
        sizes = self._group_sizes() if self.reduction == "mean" else {}
        return {k: (self.formula.score(v / n) / sizes.get(k, 1)).cpu() for k, v in self.group_sums.items()}

    def _element_scores(self, n: float) -> Scores:
        f, red = self.formula, GroupReducer(self.reduction)
        for name, (layer, role) in self._weights.items():
            w = layer.weights()[role].detach().float()
            grad = self._grad_sum(name, layer, role) if f.uses_grad else None
            red.add(layer, role, f.score(f.term(w, grad, self.sq_sum.get(name)) / n))
        return red.result()

    def _grad_sum(self, name: str, layer: LayerModules, role: str) -> torch.Tensor:
        return self._shared.sums[(layer.index, role)] if self._shared is not None else self.grad_sum[name]

    def _group_sizes(self) -> dict[tuple[int, str], int]:
        sizes: dict[tuple[int, str], int] = {}
        for layer, role in self._weights.values():
            key = (layer.index, kind_of(role))
            sizes[key] = sizes.get(key, 0) + group_size(role, layer)
        return sizes
