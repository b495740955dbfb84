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

A :class:`MeanGradient` holds one fp32 sum per prunable weight (4 bytes per parameter; under FSDP on one
owner rank per layer) plus O(layers) sums, shared by every collector that reads it; per-layer reductions
are fp64.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

import torch
from pydantic import BaseModel

from gradprune.registry import NoParams

if TYPE_CHECKING:
    from gradprune.models.adapters import LayerModules


class Moments:
    """fp32 per-tensor reductions of one gradient, shared by every collector; each is computed the first
    time a collector reads it (one pass over the gradient as it is, never an fp32 copy of it), so a
    reduction nobody reads costs nothing. ``sumsq`` comes from the norm the hooks take anyway."""

    __slots__ = ("_grad", "_norm", "_sum", "_sumsq", "_extremes", "count")

    def __init__(self, grad: torch.Tensor, norm: torch.Tensor | None = None) -> None:
        self._grad, self._norm = grad, norm
        self._sum = self._sumsq = self._extremes = None
        self.count = grad.numel()

    @property
    def sum(self) -> torch.Tensor:
        """Σ g (fp32)."""
        if self._sum is None:
            self._sum = self._grad.sum(dtype=torch.float32)
        return self._sum

    @property
    def sumsq(self) -> torch.Tensor:
        """Σ g² (fp32)."""
        if self._sumsq is None:
            norm = self._norm if self._norm is not None else fp32_norm(self._grad)
            self._sumsq = norm.square()
        return self._sumsq

    @property
    def min(self) -> torch.Tensor:
        """min g (fp32)."""
        return self._minmax()[0]

    @property
    def max(self) -> torch.Tensor:
        """max g (fp32)."""
        return self._minmax()[1]

    def _minmax(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self._extremes is None:
            g = self._grad
            mn, mx = torch.aminmax(g) if g.numel() else (g.new_zeros(()), g.new_zeros(()))
            self._extremes = (mn.float(), mx.float())
        return self._extremes


def fp32_norm(grad: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """‖g‖ accumulated in fp32 from ``grad`` as it is (a bf16 gradient is read once, not copied to fp32
    first); ``out``: an fp32 0-d tensor (or view) to write it into."""
    return torch.linalg.vector_norm(grad, dtype=torch.float32, out=out)


class MeanGradient:
    """Σ_b n_b·g_b per prunable weight (fp32) and Σ_b n_b·‖g_b‖² per layer, allocated on the gradients'
    device at first use; :meth:`summary` turns them into the per-layer statistics of the module docstring.

    Per micro-batch and prunable parameter the hooks move what one fused add needs: the gradient read
    once and the fp32 sum read and written (:meth:`observe`); ‖g_b‖² comes from the norm the hooks take
    for their finiteness check, folded once per micro-batch (:meth:`end_batch`), and Σ G_l from the sums
    at the end."""

    def __init__(self, n_layers: int, strategy=None, on_host: bool = False) -> None:
        self.n_layers = n_layers
        # on_host (for a GPU too small for the buffer): the sums live in host memory, pinned where CUDA is;
        # each gradient is copied there and added in fp32, as on the device
        self.on_host = on_host
        self.sums: dict[tuple[int, str], torch.Tensor] = {}
        self._scalars: dict[str, torch.Tensor] = {}
        self._n = 1
        # under FSDP (a sharded ``strategy``): each layer's sums live on its owner rank only, reduced to it
        # per micro-batch by the strategy; the per-layer scalars stay everywhere
        self.strategy = strategy
        self.sharded_over = bool(strategy is not None and strategy.sharded)

    def _vec(self, key: str, like: torch.Tensor, shape: tuple | None = None) -> torch.Tensor:
        if key not in self._scalars:
            self._scalars[key] = torch.zeros(shape or (self.n_layers,), dtype=torch.float64, device=like.device)
        return self._scalars[key]

    def begin_batch(self, n_samples: int) -> None:
        """The next gradients are the mean over ``n_samples`` samples."""
        self._n = n_samples

    def observe(self, layer: int, role: str, grad: torch.Tensor, moments: Moments | None = None) -> None:
        """Fold one micro-batch's gradient of one prunable weight into its sum (``moments``: unused, kept
        for callers that pass them)."""
        key = (layer, role)
        if self.sharded_over:
            self._reduce_to_owner(key, grad)
        elif self.on_host:
            if key not in self.sums:
                self.sums[key] = torch.zeros(grad.shape, dtype=torch.float32, pin_memory=torch.cuda.is_available())
            self.sums[key].add_(grad.to("cpu", torch.float32), alpha=float(self._n))
        else:
            if key not in self.sums:
                self.sums[key] = torch.zeros(grad.shape, dtype=torch.float32, device=grad.device)
            self.sums[key].add_(grad, alpha=float(self._n))  # bf16 read once, converted inside the add

    def observe_padding(self, layer: int, role: str, like: torch.Tensor) -> None:
        """A padding pass (FSDP): nothing is counted, but the owner rank waits for every rank's part."""
        if self.sharded_over:
            self._reduce_to_owner((layer, role), torch.zeros_like(like), scale=0.0)

    def _reduce_to_owner(self, key: tuple[int, str], grad: torch.Tensor, scale: float | None = None) -> None:
        part = self.strategy.reduce_to_owner(grad.float() * (float(self._n) if scale is None else scale), key[0])
        if part is not None:
            if key in self.sums:
                self.sums[key].add_(part)
            else:
                self.sums[key] = part

    def end_batch(self, sumsq: torch.Tensor | None = None) -> None:
        """Count the micro-batch and its samples; ``sumsq``: fp64 ``[n_layers]``, Σ‖g_b‖² over each layer's
        prunable weights in this micro-batch."""
        if sumsq is None:
            return
        self._vec("sample_sq", sumsq).add_(sumsq, alpha=float(self._n))
        counts = self._vec("counts", sumsq, (2,))
        counts[0] += self._n
        counts[1] += 1

    def state(self) -> dict[str, tuple[torch.Tensor, str]]:
        """Every accumulator (sums: a SUM all-reduce combines processes exactly)."""
        out = {} if self.sharded_over else {f"g:{k[0]}.{k[1]}": (v, "sum") for k, v in sorted(self.sums.items())}
        out.update({k: (v, "sum") for k, v in sorted(self._scalars.items())})
        return out

    def summary(self) -> dict[str, list[float]]:
        """Per-layer grad_norm, grad_mean, grad_std, grad_max, grad_var, grad_snr (and count)."""
        nan = float("nan")
        if "counts" not in self._scalars:
            return {k: [nan] * self.n_layers for k in ("grad_norm", "grad_mean", "grad_std", "grad_max",
                                                        "grad_var", "grad_snr")}
        n_samples, n_batches = (float(v) for v in self._scalars["counts"].tolist())
        device = self._scalars["counts"].device
        tot = torch.zeros((4, self.n_layers), dtype=torch.float64, device=device)  # sum, sumsq, max, count
        for (layer, _), acc in self.sums.items():
            # Σ of G's elements is linear in the sums; it cancels (mean ≈ 0), so it is reduced in fp64
            tot[0, layer] += acc.sum(dtype=torch.float64)
            mean = acc.double() / n_samples
            tot[1, layer] += mean.square().sum().to(device)  # (a no-op unless the sums are on the host)
            tot[2, layer] = torch.maximum(tot[2, layer], mean.abs().max().to(device) if mean.numel() else tot[2, layer])
            tot[3, layer] += mean.numel()
        if self.sharded_over:  # every layer's sums are on its owner: combine the per-layer reductions
            sums = tot[[0, 1, 3]]
            self.strategy.combine_layer_sums(sums, tot[2])
            tot[[0, 1, 3]] = sums
        tot[0] /= n_samples
        s, ss, mx, count = tot.cpu().tolist()
        spread = (self._scalars["sample_sq"].cpu() - n_samples * torch.tensor(ss, dtype=torch.float64)).tolist()
        out: dict[str, list[float]] = {k: [] for k in ("grad_norm", "grad_mean", "grad_std", "grad_max",
                                                       "grad_var", "grad_snr")}
        for li in range(self.n_layers):
            c = max(count[li], 1.0)
            mean = s[li] / c
            tau = max(spread[li], 0.0) / (n_batches - 1) if n_batches > 1 else nan
            out["grad_norm"].append(ss[li] ** 0.5)
            out["grad_mean"].append(mean)
            out["grad_std"].append(max(ss[li] / c - mean * mean, 0.0) ** 0.5)
            out["grad_max"].append(mx[li])
            out["grad_var"].append(tau / c if tau == tau else nan)
            out["grad_snr"].append(ss[li] / tau if tau == tau and tau > 0 else nan)
        return out


class StatCollector:
    """Base class of a per-layer statistic.

    Two ways to compute one: a collector that sets ``uses_mean_gradient`` gets, once after calibration
    (and after the cross-process reduction), the :class:`MeanGradient` summary in :meth:`summarize`; a
    streaming collector gets every micro-batch's gradient in :meth:`observe` and keeps its own O(layers)
    state, combined across processes by :meth:`state` ops. State is allocated on the first gradient's
    device (``_zeros``); nothing is copied to the host per hook.

    The run records :meth:`per_layer` under ``name``, which the registry sets to the name the collector
    is registered under (``Registry.build``); params come from the recipe's ``stats.params.<name>``.
    """

    Params: ClassVar[type[BaseModel]] = NoParams
    #: computed from the calibration set's mean gradient (shared buffer) rather than streamed
    uses_mean_gradient: ClassVar[bool] = False
    #: the :meth:`MeanGradient.summary` entry the default :meth:`summarize` takes (mean-gradient collectors)
    statistic: ClassVar[str | None] = None
    #: one line saying what the statistic is, recorded in run.json
    definition: ClassVar[str] = ""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # refused when the class is defined, so a registry reports it as a plugin that failed to load
        if cls.uses_mean_gradient and cls.statistic is None and cls.summarize is StatCollector.summarize:
            raise TypeError(f"{cls.__name__} sets uses_mean_gradient: set `statistic` (one of the "
                            f"MeanGradient.summary entries) or override summarize()")

    def __init__(self, params: BaseModel | None = None) -> None:
        self.params = params if params is not None else self.Params()
        #: the registry name (set by ``Registry.build``): the key in run.json, layers.csv and the CSV columns
        self.name = ""
        self.n_layers = 0
        self._state: dict[str, torch.Tensor] = {}
        self._values: list[float] | None = None

    def setup(self, layers: list[LayerModules], device: torch.device | None = None) -> None:
        """Called once before calibration with the model's prunable layers, as an estimator's ``setup`` is;
        ``device``: where the gradients will be (the built-in state is allocated lazily there instead)."""
        # not kept: the layers would hold the calibrated (under FSDP: sharded) model alive for the whole run;
        # per-layer values are indexed by ``LayerModules.index``, one slot per decoder layer up to the last
        self.n_layers = max((lm.index for lm in layers), default=-1) + 1
        self._state = {}

    def _zeros(self, key: str, like: torch.Tensor | None = None, shape: tuple = ()) -> torch.Tensor:
        """The fp64 accumulator ``key`` ([n_layers] unless ``shape``), created on ``like``'s device."""
        if key not in self._state:
            device = like.device if like is not None else "cpu"
            self._state[key] = torch.zeros(shape or (self.n_layers,), dtype=torch.float64, device=device)
        return self._state[key]

    def observe(self, layer: LayerModules, role: str, grad: torch.Tensor, moments: Moments) -> None:
        """One micro-batch's gradient of one prunable weight of ``layer`` (streaming collectors): the same
        layer object an estimator's ``observe_grad`` gets; accumulate at ``layer.index``."""

    def end_batch(self) -> None:
        """Called after each micro-batch's backward."""

    def state(self) -> dict[str, tuple[torch.Tensor, str]]:
        """Tensors to all-reduce across processes, each with its op: ``sum`` or ``max``."""
        return {}

    def summarize(self, summary: dict[str, list[float]]) -> None:
        """Mean-gradient collectors: take this statistic from the :meth:`MeanGradient.summary`."""
        self._values = list(summary[self.statistic])

    def per_layer(self) -> list[float]:
        """The statistic for every layer, in layer order."""
        if self._values is None:
            raise RuntimeError(f"collector {self.name!r} was not summarized (no calibration pass?)")
        return self._values


class GradNormCollector(StatCollector):
    """‖G_l‖: Frobenius norm of the layer's mean gradient over the calibration set."""

    statistic = "grad_norm"
    uses_mean_gradient = True
    definition = "||G_l||, G_l = mean over calibration samples of the gradient of the layer's prunable weights"


class GradMeanCollector(StatCollector):
    """Mean of the elements of the layer's mean gradient (signed)."""

    statistic = "grad_mean"
    uses_mean_gradient = True
    definition = "mean of the elements of G_l (signed)"


class GradStdCollector(StatCollector):
    """Population std of the elements of the layer's mean gradient."""

    statistic = "grad_std"
    uses_mean_gradient = True
    definition = "population std of the elements of G_l"


class GradMaxCollector(StatCollector):
    """Largest absolute element of the layer's mean gradient."""

    statistic = "grad_max"
    uses_mean_gradient = True
    definition = "max |G_l|"


class GradVarCollector(StatCollector):
    """Per-sample gradient variance per element (exact with per-sample gradients, else from micro-batches)."""

    statistic = "grad_var"
    uses_mean_gradient = True
    definition = ("per-sample gradient variance per element, sum_b n_b ||g_b - G_l||^2 / (B - 1) / count "
                  "(exact with micro-batches of one sample, estimated from micro-batch means otherwise)")


class GradSNRCollector(StatCollector):
    """Per-sample signal-to-noise ratio ‖G_l‖² / τ̂_l of the layer's gradient."""

    statistic = "grad_snr"
    uses_mean_gradient = True
    definition = "||G_l||^2 / (per-sample gradient variance, trace); the mean gradient's SNR is N times it"
