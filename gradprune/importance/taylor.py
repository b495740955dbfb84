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

``reduce`` is sum, mean or max over the group's elements. Each formula is one class below: a ``term``
linear in the moments (G, F) and whether its score is the term's absolute value. The accumulator
(:class:`gradprune.importance.gradient_sums.GradientSums`) keeps only what the chosen variant needs:
vector/joint and second-order sum/mean sum the term of each micro-batch per row inside the hook
(linearity), so no parameter-sized buffer exists; element level reads G and F, which calibration keeps
once for every plugin that reads them (under FSDP each rank its rows).
"""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
from pydantic import BaseModel, ConfigDict, model_validator

from gradprune.importance.gradient_sums import GradientSums


class TaylorFormula:
    """One Taylor formula: ``term(w, G, F)``, linear in the moments, and its score (``|term|`` or ``term``).

    Linearity lets the accumulator apply ``term`` to one micro-batch's (g_b, g_b²) and sum the results, or
    to the summed moments; a formula without the absolute value also commutes with sums over a group.
    """

    #: reads G (the mean gradient) / F (the Fisher diagonal)
    uses_grad: ClassVar[bool] = False
    uses_sq: ClassVar[bool] = False
    #: the score is |term| (so only sums inside the absolute value may be streamed)
    absolute: ClassVar[bool] = True
    #: the granularity when the recipe names none
    natural_granularity: ClassVar[str] = "element"

    @staticmethod
    def term(w: torch.Tensor, grad: torch.Tensor | None, sq: torch.Tensor | None) -> torch.Tensor:
        """The term for weights ``w``, gradient moment ``grad`` and squared-gradient moment ``sq``."""
        raise NotImplementedError

    def score(self, term: torch.Tensor) -> torch.Tensor:
        """A (fresh) term tensor made a score, in place."""
        return term.abs_() if self.absolute else term

    @classmethod
    def product_form(cls) -> tuple[float, float] | None:
        """``(a, b)`` when ``term(w, G, F) = a·w·G + b·w²·F``, so that one micro-batch's term is
        ``a·p + b·p²`` with ``p = w⊙g_b`` (the hooks then read w and g_b once); None for another form.

        Read off the formula itself (at w = 1) and checked at two other points, so it is stated once."""
        if "_product_form" not in cls.__dict__:
            def at(w: float, g: float, f: float) -> float:
                t = torch.tensor([w], dtype=torch.float64)
                return float(cls.term(t, torch.tensor([g], dtype=torch.float64) if cls.uses_grad else None,
                                      torch.tensor([f], dtype=torch.float64) if cls.uses_sq else None))

            a, b = at(1.0, 1.0, 0.0), at(1.0, 0.0, 1.0)
            fits = all(abs(at(w, g, f) - (a * w * g + b * w * w * f)) <= 1e-12 * (1 + abs(at(w, g, f)))
                       for w, g, f in ((3.0, 5.0, 7.0), (-0.5, 2.0, 0.25)))
            cls._product_form = (a, b) if fits else None
        return cls._product_form


class TaylorFirstOrder(TaylorFormula):
    """First order: |w·G|, the linear change of the loss when w is set to zero."""

    uses_grad = True
    natural_granularity = "vector"

    @staticmethod
    def term(w, grad, sq):
        """w·G."""
        return w * grad


class FisherSecondOrder(TaylorFormula):
    """Second order with the Fisher diagonal for the Hessian: ½·w²·F (≥ 0, no absolute value)."""

    uses_sq = True
    absolute = False

    @staticmethod
    def term(w, grad, sq):
        """½·w²·F."""
        return w.square().mul_(sq).mul_(0.5)


class TaylorMix(TaylorFormula):
    """First order minus the Fisher second-order term: |w·G − ½·w²·F|."""

    uses_grad = uses_sq = True

    @staticmethod
    def term(w, grad, sq):
        """w·G − ½·w²·F."""
        return TaylorFirstOrder.term(w, grad, sq).sub_(FisherSecondOrder.term(w, grad, sq))


FORMULAS: dict[str, type[TaylorFormula]] = {"first": TaylorFirstOrder, "second": FisherSecondOrder,
                                            "mix": TaylorMix}
#: each order's granularity when the recipe does not name one
NATURAL_GRANULARITY = {order: f.natural_granularity for order, f in FORMULAS.items()}


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


def summing_level(formula: TaylorFormula, granularity: str, reduction: str) -> str:
    """Where the accumulator may sum the formula's term: per row (vector), per group (joint, or element
    sum/mean of a formula without absolute value), else per element."""
    if granularity == "vector":
        return "rows"
    if granularity == "joint" or (reduction != "max" and not formula.absolute):
        return "groups"
    return "element"


class TaylorImportance(GradientSums):
    """Taylor expansion of the loss change when a group is removed (first order, Fisher, or mix)."""

    Params = TaylorParams

    def __init__(self, params: TaylorParams | None = None) -> None:
        p = params if params is not None else TaylorParams()
        formula = FORMULAS[p.order]()
        self.granularity = p.resolved_granularity
        super().__init__(p, formula, summing_level(formula, self.granularity, p.reduction), p.reduction)
        self.per_sample = p.per_sample
