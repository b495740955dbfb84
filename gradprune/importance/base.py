"""The estimator interface: calibration feeds gradients/activations, ``scores`` returns per-group scores.

Scores are keyed by ``(layer index, kind)`` with kind ``"attn"`` (one group = one KV head with its
query heads) or ``"mlp"`` (one group = one intermediate channel); values are fp32 CPU tensors.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

import torch
from pydantic import BaseModel

from gradprune.models.adapters import role_kind
from gradprune.registry import NoParams

if TYPE_CHECKING:
    from gradprune.models.adapters import LayerModules

KINDS = ("attn", "mlp")

Scores = dict[tuple[int, str], torch.Tensor]


def kind_of(role: str) -> str:
    """Which group kind a weight role belongs to (``o_bias`` is attention's, though no group cuts it)."""
    return role_kind(role)


class ImportanceEstimator:
    """Base class: override what the estimator needs; accumulators stay fp32 whatever the model dtype."""

    Params: ClassVar[type[BaseModel]] = NoParams
    #: needs a backward pass (gradient hooks)
    needs_gradients: ClassVar[bool] = True
    #: needs inputs of o_proj / down_proj (forward pre-hooks)
    needs_activations: ClassVar[bool] = False
    #: wants micro-batches of one sample (exact per-sample second-order term)
    per_sample: bool = False
    #: keeps an fp32 accumulator per prunable weight (refused under FSDP, where it would be a full copy per rank)
    element_state: bool = False

    def __init__(self, params: BaseModel | None = None) -> None:
        self.params = params if params is not None else self.Params()
        self.layers: list[LayerModules] = []

    @property
    def needs_calibration(self) -> bool:
        """Whether calibration data must be run through the model at all."""
        return self.needs_gradients or self.needs_activations

    def setup(self, layers: list[LayerModules]) -> None:
        """Called once before calibration with the model's prunable layers."""
        self.layers = layers

    def rebind(self, layers: list[LayerModules]) -> None:
        """After calibration, the same layers in another model object (FSDP: the full model rank 0 gathered);
        :meth:`scores` reads weights from these. Accumulators are kept."""
        self.layers = layers

    def begin_batch(self, n_samples: int) -> None:
        """Before each micro-batch: its gradients are the mean over ``n_samples`` samples (weigh them by it,
        so that a mean over micro-batches is a mean over samples whatever the split)."""
        self.batch_samples = n_samples

    def observe_grad(self, layer: LayerModules, role: str, weight: torch.Tensor, grad: torch.Tensor) -> None:
        """One micro-batch's gradient of one prunable weight (freed right after)."""

    def observe_input(self, layer: LayerModules, role: str, x: torch.Tensor) -> None:
        """One micro-batch's input to ``o`` or ``down`` (shape [..., in_features])."""

    def end_batch(self) -> None:
        """Called after each micro-batch's backward (or forward when no gradients are needed)."""

    def state(self) -> dict[str, torch.Tensor]:
        """Accumulators to all-reduce (sum) across processes; tensors are modified in place."""
        return {}

    def scores(self) -> Scores:
        """Final per-group scores (higher = more important) for every layer and kind."""
        raise NotImplementedError

    def release(self) -> None:
        """Drop the accumulators once :meth:`scores` was taken (calibration calls it), so that a caller
        still holding the estimator does not hold them (an element-level estimator's are parameter-sized),
        nor the layers (and so the model). Every dict attribute is emptied; the estimator is spent."""
        self.layers = []
        for value in vars(self).values():
            if isinstance(value, dict):
                value.clear()
