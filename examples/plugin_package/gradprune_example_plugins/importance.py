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

    def setup(self, layers: list[LayerModules]) -> None:
        super().setup(layers)
        self.sums: dict[tuple[int, str], torch.Tensor] = {}
        self.counts: dict[tuple[int, str], torch.Tensor] = {}

    def observe_grad(self, layer: LayerModules, role: str, weight: torch.Tensor, grad: torch.Tensor) -> None:
        view = group_view(grad.detach().float().abs().pow(self.params.power), role, layer)
        key = (layer.index, kind_of(role))
        # accumulate in fp32 whatever the model dtype (fp16 gradients would overflow or underflow)
        self.sums[key] = self.sums[key] + view.sum(1) if key in self.sums else view.sum(1)
        n = torch.full_like(view[:, 0], view.shape[1])
        self.counts[key] = self.counts[key] + n if key in self.counts else n

    def state(self) -> dict[str, torch.Tensor]:
        # summed across processes when calibration runs on several GPUs
        out = {f"sum:{i}.{k}": v for (i, k), v in self.sums.items()}
        out.update({f"count:{i}.{k}": v for (i, k), v in self.counts.items()})
        return out

    def scores(self) -> Scores:
        return {key: (s / self.counts[key].clamp_min(1)).cpu() for key, s in self.sums.items()}
