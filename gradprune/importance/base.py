"""The estimator interface: a calibration plugin whose result is per-group scores.

Scores are keyed by ``(layer index, kind)`` with kind ``"attn"`` (one group = one KV head with its
query heads) or ``"mlp"`` (one group = one intermediate channel); values are fp32 CPU tensors. What
calibration feeds an estimator, and how its accumulators combine across processes, is the plugin
protocol of :mod:`gradprune.calibration_plugin`.
"""

from __future__ import annotations

import torch

from gradprune.calibration_plugin import CalibrationPlugin
from gradprune.models.adapters import role_kind

KINDS = ("attn", "mlp")

Scores = dict[tuple[int, str], torch.Tensor]


def kind_of(role: str) -> str:
    """Which group kind a weight role belongs to (``o_bias`` is attention's, though no group cuts it)."""
    return role_kind(role)


class ImportanceEstimator(CalibrationPlugin):
    """Base class of an importance estimator: override the calls it needs, and :meth:`scores`.

    Accumulators stay fp32 (or fp64) whatever the model dtype. ``scores`` reads the weights from
    ``self.layers`` (under FSDP, rank 0's gathered model) and the reduced accumulators.
    """

    def scores(self) -> Scores:
        """Final per-group scores (higher = more important) for every layer and kind."""
        raise NotImplementedError
