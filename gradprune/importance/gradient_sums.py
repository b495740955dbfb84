"""The accumulator under the Taylor estimators: sample-weighted sums of a formula's term, per row.

A group (one KV head with its query heads, or one MLP channel) is a set of *rows*: rows of q/k/v/gate/up,
columns of o/down, elements of a bias. The estimator sums the formula's term over each row, then scores
each group from its rows' sums. Where the term comes from depends on the level it is scored at:

* ``rows`` / ``groups`` (vector, joint, Fisher sum/mean): the term of each micro-batch's gradient g_b,
  summed per row, weighted by its samples n_b (``observe_grad``: Σ_b n_b·rowsum(term(w, g_b)), no
  parameter-sized buffer). A first-order term is linear in the gradient, so when calibration keeps the
  mean gradient G for another plugin anyway, it hands G over once instead (``observe_mean``:
  rowsum(term(w, G)), the same numbers divided by N).
* ``element`` (the formula's score taken per element, then reduced): from G and F (the sample-weighted
  mean of g²), which calibration keeps once per prunable weight for every plugin that reads them;
  ``observe_mean`` reduces each element's score per row (sum or max) at once.

Per group: ``rows`` sums the score of each row's sum (LLM-Pruner's ``vectorize``), ``groups`` scores the
sum over the group's rows, ``element`` reduces the rows' values (sum, mean, max). The formulas
themselves live in :mod:`gradprune.importance.taylor`; this module never states one.
"""

from __future__ import annotations

from typing import Protocol

import torch

from gradprune.importance.base import ImportanceEstimator, Scores, kind_of
from gradprune.models.adapters import (
    COLUMN_ROLES,
    UNGROUPED_ROLES,
    LayerModules,
    by_group,
    row_axis,
    rows_per_group,
)

#: the levels a formula's term can be summed at before it becomes a score
LEVELS = ("element", "rows", "groups")


class Formula(Protocol):
    """What the accumulator needs of a formula (``gradprune.importance.taylor.TaylorFormula``)."""

    uses_grad: bool
    uses_sq: bool
    absolute: bool

    def term(self, w: torch.Tensor, grad: torch.Tensor | None, sq: torch.Tensor | None) -> torch.Tensor: ...

    def product_form(self) -> tuple[float, float] | None: ...


def elements_per_group(role: str, layer: LayerModules) -> int:
    """Elements of the role's tensor that one group removes (its rows × the other dimension)."""
    w = layer.weights()[role]
    other = 1 if w.dim() == 1 else w.shape[1 - row_axis(role)]
    return rows_per_group(role, layer) * other


def per_row(values: torch.Tensor, role: str, reduce: str = "sum") -> torch.Tensor:
    """``values`` (shaped like the role's weight, or some of its rows) reduced to one value per row the
    groups cut: over each row (q/k/v/gate/up), over the given rows for each column (o/down), or unchanged
    (a bias); ``reduce``: sum or max."""
    if values.dim() == 1:
        return values
    dim = 0 if role in COLUMN_ROLES else 1
    if reduce == "max":
        if values.shape[dim] == 0:  # an FSDP rank may hold no row of a small weight
            return values.new_zeros(values.shape[1 - dim])
        return values.amax(dim=dim)
    return values.sum(dim=dim)


_ZERO: dict[torch.device, torch.Tensor] = {}


def fp32_product(w: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """w⊙g in fp32 from weights and gradients as they are (bf16: each read once, converted inside the op;
    the product is exact in fp32 and rounded once, as ``w.float() * g.float()``)."""
    zero = _ZERO.get(g.device)
    if zero is None:  # one element, not 0-d: a 0-d tensor would not lift the result to fp32
        zero = _ZERO[g.device] = torch.zeros(1, dtype=torch.float32, device=g.device)
    return torch.addcmul(zero, w, g)


class GradientSums(ImportanceEstimator):
    """Streams calibration gradients (or takes G and F) into the per-row sums ``formula`` needs at
    ``level``; scores them with it. ``reduction`` (sum, mean or max) combines element values per group."""

    def __init__(self, params, formula: Formula, level: str, reduction: str) -> None:
        super().__init__(params)
        if level not in LEVELS:
            raise ValueError(f"level {level!r}; expected one of {LEVELS}")
        self.formula, self.level, self.reduction = formula, level, reduction
        if level == "element":
            self.reads = frozenset(name for name, used in (("mean_gradient", formula.uses_grad),
                                                           ("mean_square", formula.uses_sq)) if used)
        else:
            self.reads = frozenset({"gradients"})
            self.linear = not formula.uses_sq  # first order: the term is linear in the gradient

    def observe_grad(self, layer: LayerModules, role: str, weight: torch.Tensor, grad: torch.Tensor) -> None:
        """n_b × this micro-batch's term, summed per row (gradients read as they are: no fp32 copy)."""
        if role in UNGROUPED_ROLES:
            return  # no group removes these elements
        f, form = self.formula, self.formula.product_form()
        if form is None:
            g = grad.float()
            part = per_row(f.term(weight.detach().float(), g if f.uses_grad else None, g * g if f.uses_sq else None),
                           role)
        else:  # term(w, g_b, g_b²) = a·(w⊙g_b) + b·(w⊙g_b)²: one fp32 product, one sum per coefficient
            a, b = form
            p = fp32_product(weight.detach(), grad)
            part = per_row(p, role).mul_(a) if a else None
            if b:  # squared in place (a norm would skip that pass, but CPU norms lose digits a sum keeps)
                sq = per_row(p.square_(), role)
                part = sq.mul_(b) if part is None else part.add_(sq, alpha=b)
        self.accumulator(f"sum:{layer.index}.{role}", part.shape).add_(part, alpha=float(self.batch_samples))

    def end_batch(self) -> None:
        """Count the samples (the sums are divided by them)."""
        self.accumulator("n_samples", ())[...] += self.batch_samples

    def observe_mean(self, layer, role, weight, grad, sq):
        """The term of G (and F), per row: the sum of w·G (first order, ``rows``/``groups``), or the reduction
        of each element's score (``element``); a column role's values over these rows are partial (``sum``,
        or ``max`` at element level with reduction max)."""
        if role in UNGROUPED_ROLES:
            return
        f, w = self.formula, weight.detach().double()
        reduce = "max" if self.level == "element" and self.reduction == "max" else "sum"
        term = f.term(w, grad, sq)
        values = per_row(term.abs_() if self.level == "element" and f.absolute else term, role, reduce)
        op = reduce if role in COLUMN_ROLES else "rows"
        acc = self.accumulator(f"mean:{layer.index}.{role}", values.shape, op)
        acc.copy_(torch.maximum(acc, values) if reduce == "max" else acc + values)

    def scores(self) -> Scores:
        """Per-group scores: the formula's score of each mean term, reduced over the group."""
        n = float(self.accumulator("n_samples", ()))
        if n == 0:
            raise RuntimeError("Taylor importance saw no calibration batch")
        totals: dict[tuple[int, str], torch.Tensor] = {}
        sizes: dict[tuple[int, str], int] = {}
        for layer in self.layers:
            for role in layer.weights():
                rows = self._row_values(layer, role, n)
                if rows is None:
                    continue
                key, g = (layer.index, kind_of(role)), by_group(rows, role, layer)
                part = g.amax(dim=1) if self.reduction == "max" and self.level == "element" else (
                    self._score(g).sum(dim=1) if self.level == "rows" else g.sum(dim=1))
                combine = torch.maximum if self.reduction == "max" and self.level == "element" else torch.add
                totals[key] = combine(totals[key], part) if key in totals else part
                sizes[key] = sizes.get(key, 0) + elements_per_group(role, layer)
        if self.level == "groups":
            totals = {k: self._score(v) for k, v in totals.items()}
        if self.reduction == "mean":
            totals = {k: v / sizes[k] for k, v in totals.items()}
        return {k: v.float().cpu() for k, v in totals.items()}

    def _row_values(self, layer: LayerModules, role: str, n: float) -> torch.Tensor | None:
        """The role's per-row values of the mean term (from G, or the micro-batch sums / N); None: none."""
        state = self.state()
        name = f"{layer.index}.{role}"
        if f"mean:{name}" in state:
            return state[f"mean:{name}"][0]
        if f"sum:{name}" in state:
            return state[f"sum:{name}"][0] / n
        return None

    def _score(self, term: torch.Tensor) -> torch.Tensor:
        return term.abs() if self.formula.absolute else term
