"""Per-layer gradient statistics, defined on the calibration set's mean gradient.

For layer l, G_l is the mean over the N calibration samples of the gradient of the loss with respect
to the layer's prunable weights (what a Taylor pass that accumulates ``.grad`` over all samples leaves
behind; every window has seq_len tokens, so it is also the token-weighted mean). It does not depend on
how the samples are split into micro-batches, nor on ``per_sample``. Over its elements:

* grad_norm = ‖G_l‖                        (Frobenius norm over all prunable weights of the layer)
* grad_mean = Σ G_l / count                (signed; cross-layer ratios use |grad_mean|, which is
                                             ill-conditioned when G_l ≈ 0: a sign flip moves it a lot)
* grad_std  = sqrt(Σ G_l²/count − mean²)   (population std; when mean ≈ 0 and every layer has the same
                                             prunable size, grad_std_ratio equals grad_norm_ratio)
* grad_max  = max |G_l|

The noise around it, from the same pass, with B the number of micro-batch gradients g_b (of n_b samples):

* grad_var  = τ̂_l / count, τ̂_l = Σ_b n_b ‖g_b − G_l‖² / (B − 1): the per-sample gradient variance
              (trace of the covariance, per element). Exact (the sample variance) when every micro-batch
              is one sample (``per_sample``); otherwise estimated from the micro-batch means (unbiased for
              independent samples); NaN with fewer than 2 micro-batches.
* grad_snr  = ‖G_l‖² / τ̂_l: per-sample signal-to-noise ratio; the mean gradient's own SNR is N × grad_snr.

Each statistic is a plugin (:mod:`gradprune.calibration_plugin`): those of G read the mean gradient
(``reads = {"mean_gradient"}``), whose fp32 sums calibration keeps once for every plugin that reads it (4
bytes per prunable parameter; 1/N of it per rank under FSDP), and reduce each piece of it to per-layer fp64
partial sums in ``observe_mean``; grad_var and grad_snr also read every micro-batch's ‖g_b‖².
"""

from __future__ import annotations

from typing import ClassVar

import torch

from gradprune.calibration_plugin import CalibrationPlugin, grad_norm


class StatCollector(CalibrationPlugin):
    """Base class of a per-layer statistic: a calibration plugin whose result is one value per layer.

    The run records :meth:`per_layer` under ``name``, which the registry sets to the name the collector
    is registered under (``Registry.build``); params come from the recipe's ``stats.params.<name>``.
    """

    #: one line saying what the statistic is, recorded in run.json
    definition: ClassVar[str] = ""

    def per_layer(self) -> list[float]:
        """The statistic for every layer, in layer order."""
        raise NotImplementedError


class GradNormCollector(StatCollector):
    """‖G_l‖: Frobenius norm of the layer's mean gradient over the calibration set."""

    reads = frozenset({"mean_gradient"})
    definition = "||G_l||, G_l = mean over calibration samples of the gradient of the layer's prunable weights"

    def observe_mean(self, layer, role, weight, grad, sq):
        """Σ G² of the piece, into its layer's sum."""
        self.accumulator("sumsq")[layer.index] += grad.square().sum()

    def per_layer(self) -> list[float]:
        return self.accumulator("sumsq").sqrt().tolist()


class GradMeanCollector(StatCollector):
    """Mean of the elements of the layer's mean gradient (signed)."""

    reads = frozenset({"mean_gradient"})
    definition = "mean of the elements of G_l (signed)"

    def observe_mean(self, layer, role, weight, grad, sq):
        """Σ G and the element count of the piece."""
        self.accumulator("sum")[layer.index] += grad.sum()
        self.accumulator("count")[layer.index] += grad.numel()

    def per_layer(self) -> list[float]:
        return (self.accumulator("sum") / self.accumulator("count").clamp_min(1)).tolist()


class GradStdCollector(StatCollector):
    """Population std of the elements of the layer's mean gradient."""

    reads = frozenset({"mean_gradient"})
    definition = "population std of the elements of G_l"

    def observe_mean(self, layer, role, weight, grad, sq):
        """Σ G, Σ G² and the element count of the piece."""
        self.accumulator("sum")[layer.index] += grad.sum()
        self.accumulator("sumsq")[layer.index] += grad.square().sum()
        self.accumulator("count")[layer.index] += grad.numel()

    def per_layer(self) -> list[float]:
        count = self.accumulator("count").clamp_min(1)
        mean = self.accumulator("sum") / count
        return (self.accumulator("sumsq") / count - mean * mean).clamp_min(0).sqrt().tolist()


class GradMaxCollector(StatCollector):
    """Largest absolute element of the layer's mean gradient."""

    reads = frozenset({"mean_gradient"})
    definition = "max |G_l|"

    def observe_mean(self, layer, role, weight, grad, sq):
        """max |G| of the piece (an FSDP rank may hold no row of a small weight)."""
        top = self.accumulator("max", op="max")
        if grad.numel():
            top[layer.index] = torch.maximum(top[layer.index], grad.abs().max())

    def per_layer(self) -> list[float]:
        return self.accumulator("max", op="max").tolist()


class _GradientNoise(StatCollector):
    """What grad_var and grad_snr share: Σ_b n_b‖g_b‖² per layer, the samples N and micro-batches B, and
    ‖G_l‖² with the element count; τ̂_l = (Σ_b n_b‖g_b‖² − N‖G_l‖²) / (B − 1)."""

    reads = frozenset({"gradients", "mean_gradient"})

    def observe_grad(self, layer, role, weight, grad):
        """n_b·‖g_b‖² (the hooks' norm: no second read of the gradient)."""
        norm = grad_norm(grad).double()
        self.accumulator("sample_sq")[layer.index] += norm * norm * self.batch_samples

    def end_batch(self) -> None:
        """Count the micro-batch and its samples."""
        counts = self.accumulator("counts", (2,))
        counts[0] += self.batch_samples
        counts[1] += 1

    def observe_mean(self, layer, role, weight, grad, sq):
        """‖G‖² and the element count of the piece."""
        self.accumulator("mean_sq")[layer.index] += grad.square().sum()
        self.accumulator("count")[layer.index] += grad.numel()

    def _tau(self) -> tuple[list[float], list[float], list[float]]:
        """(τ̂_l, ‖G_l‖², element count) per layer; τ̂ is NaN with fewer than 2 micro-batches."""
        n_samples, n_batches = self.accumulator("counts", (2,)).tolist()
        mean_sq = self.accumulator("mean_sq").tolist()
        spread = (self.accumulator("sample_sq") - n_samples * self.accumulator("mean_sq")).tolist()
        nan = float("nan")
        tau = [max(s, 0.0) / (n_batches - 1) if n_batches > 1 else nan for s in spread]
        return tau, mean_sq, [max(c, 1.0) for c in self.accumulator("count").tolist()]


class GradVarCollector(_GradientNoise):
    """Per-sample gradient variance per element (exact with per-sample gradients, else from micro-batches)."""

    definition = ("per-sample gradient variance per element, sum_b n_b ||g_b - G_l||^2 / (B - 1) / count "
                  "(exact with micro-batches of one sample, estimated from micro-batch means otherwise)")

    def per_layer(self) -> list[float]:
        tau, _, count = self._tau()
        return [t / c if t == t else t for t, c in zip(tau, count, strict=True)]


class GradSNRCollector(_GradientNoise):
    """Per-sample signal-to-noise ratio ‖G_l‖² / τ̂_l of the layer's gradient."""

    definition = "||G_l||^2 / (per-sample gradient variance, trace); the mean gradient's SNR is N times it"

    def per_layer(self) -> list[float]:
        tau, mean_sq, _ = self._tau()
        return [m / t if t == t and t > 0 else float("nan") for t, m in zip(tau, mean_sq, strict=True)]
