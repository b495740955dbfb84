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
from gradprune.models.adapters import COLUMN_ROLES, UNGROUPED_ROLES, LayerModules, group_sum, group_view3

if TYPE_CHECKING:
    from gradprune.importance.taylor import TaylorFormula

#: the levels a formula's term can be summed at before it becomes a score
LEVELS = ("element", "rows", "groups")


def row_sums(values: torch.Tensor, role: str, layer: LayerModules, dtype: torch.dtype | None = None) -> torch.Tensor:
    """``[n_groups, rows]``: the sum of ``values`` over each row (q/k/v/gate/up) or column (o/down) of the
    role's weight that the group removes; a bias element is its own row."""
    g3 = group_view3(values, role, layer)  # rows: [n, rows, in]; columns: [n, out, cols]; bias: [n, 1, rows]
    return g3.sum(dim=2 if values.dim() == 2 and role not in COLUMN_ROLES else 1, dtype=dtype)


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


#: per level: the sum of a term over each row / group
_LEVEL_SUMS = {"rows": row_sums, "groups": group_sum}


def _zeros_like_in(store: dict, key, like: torch.Tensor) -> torch.Tensor:
    if key not in store:
        store[key] = torch.zeros(like.shape, dtype=torch.float32, device=like.device)
    return store[key]


_ZERO: dict[torch.device, torch.Tensor] = {}


def fp32_product(w: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """w⊙g in fp32 from weights and gradients as they are (bf16: each read once, converted inside the op;
    the product is exact in fp32 and rounded once, as ``w.float() * g.float()``)."""
    zero = _ZERO.get(g.device)
    if zero is None:  # one element, not 0-d: a 0-d tensor would not lift the result to fp32
        zero = _ZERO[g.device] = torch.zeros(1, dtype=torch.float32, device=g.device)
    return torch.addcmul(zero, w, g)


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
        gradients, all of them on this process) instead of keeping a second fp32 buffer per prunable weight;
        a term linear in G alone (first order) is then summed per row or group once, from it, at the end."""
        if not self.formula.uses_grad or mean_grad.sharded_over:
            return
        if self.element_state or not self.formula.uses_sq:
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
        self._weights[name] = (layer, role)
        # gradients are read as they are (bf16 included): the fused adds convert inside, no fp32 copy
        if self.level == "element":
            if f.uses_grad and self._shared is None:
                _zeros_like_in(self.grad_sum, name, grad).add_(grad, alpha=n)
            if f.uses_sq:
                _zeros_like_in(self.sq_sum, name, grad).addcmul_(grad, grad, value=n)
            return
        if self._shared is not None:
            return  # summed once from Σ n_b·g_b after calibration
        # the term of this micro-batch's moments (g_b, g_b²): linear in them, so its sums stream
        level_sum = _LEVEL_SUMS[self.level]
        form = f.product_form()
        if form is None:
            g = grad.float()
            part = level_sum(f.term(weight.detach().float(), g if f.uses_grad else None,
                                    g * g if f.uses_sq else None), role, layer)
        else:  # term(w, g_b, g_b²) = a·(w⊙g_b) + b·(w⊙g_b)²: one fp32 product, one sum per coefficient
            a, b = form
            p = fp32_product(weight.detach(), grad)
            part = level_sum(p, role, layer).mul_(a) if a else None
            if b:  # squared in place (a norm would skip that pass, but CPU norms lose digits a sum keeps)
                sq = level_sum(p.square_(), role, layer)
                part = sq.mul_(b) if part is None else part.add_(sq, alpha=b)
        key = name if self.level == "rows" else (layer.index, kind_of(role))
        store = self.row_sum if self.level == "rows" else self.group_sums
        _zeros_like_in(store, key, part).add_(part, alpha=n)

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
        if self._shared is not None:
            self._sum_from_mean_gradient()
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

    def _sum_from_mean_gradient(self) -> None:
        """Rows / groups of a term linear in G alone: Σ_b n_b·term(w, g_b) = term(w, Σ_b n_b·g_b), summed
        here once (reduced in fp64) instead of per micro-batch."""
        level_sum = _LEVEL_SUMS[self.level]
        self.row_sum, self.group_sums = {}, {}
        for name, (layer, role) in self._weights.items():
            w = layer.weights()[role].detach()
            term = self.formula.term(w, self._grad_sum(name, layer, role), None)
            part = level_sum(term, role, layer, dtype=torch.float64).float()
            if self.level == "rows":
                self.row_sum[name] = part
            else:
                key = (layer.index, kind_of(role))
                self.group_sums[key] = self.group_sums[key] + part if key in self.group_sums else part

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
