"""Weight-magnitude baseline: the L1 or L2 norm of every weight a group would remove."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

from gradprune.importance.base import ImportanceEstimator, Scores, kind_of
from gradprune.models.adapters import group_sum


class MagnitudeParams(BaseModel):
    """Params of the magnitude baseline."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    norm: Literal["l1", "l2"] = "l2"


class MagnitudeImportance(ImportanceEstimator):
    """‖W_group‖ (L1 or L2) over all the group's rows/columns; needs no calibration data."""

    Params = MagnitudeParams

    def scores(self) -> Scores:
        """Per-group norms computed from the current weights."""
        acc: Scores = {}
        for layer in self.layers:
            for role, w in layer.weights().items():
                v = w.detach().float()
                part = group_sum(v.abs() if self.params.norm == "l1" else v.square(), role, layer)
                key = (layer.index, kind_of(role))
                acc[key] = acc[key] + part if key in acc else part
        if self.params.norm == "l2":
            acc = {k: v.sqrt() for k, v in acc.items()}
        return {k: v.cpu() for k, v in acc.items()}
