"""``grad_abs``: the mean |gradient| of each group's weights, ignoring the weights themselves."""

from __future__ import annotations

import torch
from pydantic import BaseModel, ConfigDict, Field

from gradprune.importance.base import ImportanceEstimator, Scores, kind_of
from gradprune.models.adapters import LayerModules, group_view


class GradAbsParams(BaseModel):
    """Params of ``grad_abs`` (checked when the recipe is validated: ``importance.params.power``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    power: float = Field(1.0, gt=0, description="score = mean |g|^power over the group's elements")


class GradAbsImportance(ImportanceEstimator):
    """Mean |g|^power per group over all micro-batches (gradient magnitude only, a Taylor ablation)."""

    Params = GradAbsParams

    reads = frozenset({"gradients"})

    def observe_grad(self, layer: LayerModules, role: str, weight: torch.Tensor, grad: torch.Tensor) -> None:
        # accumulated in fp32 or wider whatever the model dtype (fp16 gradients would overflow or underflow)
        view = group_view(grad.detach().float().abs().pow(self.params.power), role, layer)
        name = f"{layer.index}.{kind_of(role)}"
        # accumulators made with self.accumulator are summed across processes when calibration runs on several
        self.accumulator(f"sum:{name}", view.shape[:1]).add_(view.sum(1))
        self.accumulator(f"count:{name}", view.shape[:1]).add_(view.shape[1])

    def scores(self) -> Scores:
        state = {name: t for name, (t, _) in self.state().items()}
        out: Scores = {}
        for name, total in state.items():
            if name.startswith("sum:"):
                index, kind = name.removeprefix("sum:").split(".")
                out[(int(index), kind)] = (total / state[f"count:{index}.{kind}"].clamp_min(1)).float().cpu()
        return out
