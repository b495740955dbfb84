"""The one contract between calibration and its plugins: importance estimators and statistic collectors.

A plugin says what it reads (``reads``, ``input_roles``), is fed during the pass and after it, keeps its
accumulators as named tensors whose reduction across processes it declares (``state``), and turns them
into its result (an estimator's ``scores``, a collector's ``per_layer``). The calls, in order:

* ``setup(layers, device)`` once, with the model's prunable layers and the device the gradients are on;
* per micro-batch: ``begin_batch(n_samples)``; ``observe_grad(layer, role, weight, grad)`` once per
  prunable weight (``reads`` has ``"gradients"``); ``observe_input(layer, role, x)`` once per Linear in
  ``input_roles``; ``end_batch()``;
* after the pass, ``observe_mean(layer, role, weight, grad, sq)`` once per piece of the mean gradient G
  (``reads`` has ``"mean_gradient"``) and of the mean squared gradient F (``"mean_square"``);
* ``state()``, reduced across processes in place; then the result.

The reduction vocabulary (``Reduction``):

* ``sum``: summed over processes (any shape);
* ``max``: the element-wise maximum over processes;
* ``rows``: a tensor whose dim 0 is the weight's rows, made from a piece of the mean gradient: summed
  over data-parallel replicas, concatenated over FSDP's row shards (a piece is the whole weight on one
  process and under DDP, this rank's rows under FSDP).

Plugins never call ``torch.distributed``: the strategy (:mod:`gradprune.strategy`) applies the
reductions. ``gradprune.testing.check_plugin`` checks a plugin against all of this.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Literal

import torch
from pydantic import BaseModel

from gradprune.registry import NoParams

if TYPE_CHECKING:
    from gradprune.models.adapters import LayerModules

Reduction = Literal["sum", "max", "rows"]
REDUCTIONS: tuple[str, ...] = ("sum", "max", "rows")
#: what a plugin may read (``reads``)
READS: tuple[str, ...] = ("gradients", "mean_gradient", "mean_square")
#: the Linears whose inputs a plugin may read (``input_roles``)
INPUT_ROLES: tuple[str, ...] = ("q", "k", "v", "o", "gate", "up", "down")
#: the names of the earlier protocol, refused when a plugin class sets them
_RETIRED = {"needs_gradients": "reads = {'gradients'}", "needs_activations": "input_roles = ('o', 'down')",
            "uses_mean_gradient": "reads = {'mean_gradient'} and observe_mean()",
            "statistic": "observe_mean() and per_layer()", "element_state": "reads",
            "share_mean_gradient": "reads = {'mean_gradient'}"}


class CalibrationPlugin:
    """Base of importance estimators and statistic collectors: what calibration feeds and how it combines.

    Subclasses set ``reads`` / ``input_roles`` and override the ``observe_*`` calls they need; accumulators
    made with :meth:`accumulator` are their ``state()`` (override ``state`` to declare others).
    """

    Params: ClassVar[type[BaseModel]] = NoParams
    #: what the plugin reads of the calibration pass: "gradients" (``observe_grad`` per micro-batch),
    #: "mean_gradient" (G in ``observe_mean``), "mean_square" (F, the mean of g², in ``observe_mean``)
    reads: ClassVar[frozenset[str]] = frozenset()
    #: the Linears whose inputs ``observe_input`` gets (forward pre-hooks only on those some plugin reads)
    input_roles: ClassVar[tuple[str, ...]] = ()
    #: micro-batches of one sample (for terms that are exact only per sample)
    per_sample: bool = False
    #: ``observe_grad`` and ``observe_mean`` compute the same state, linear in the gradient: when G is kept
    #: for another plugin anyway, calibration calls ``observe_mean`` only (no per-micro-batch work)
    linear: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # refused when the class is defined, so a registry reports it as a plugin that failed to load
        retired = [n for n in _RETIRED if n in cls.__dict__]
        if retired:
            raise TypeError(f"{cls.__name__} sets {retired[0]!r}, which the plugin protocol no longer has: "
                            f"use {_RETIRED[retired[0]]} (docs/plugins.md)")
        unknown = set(cls.reads) - set(READS)
        if unknown or set(cls.input_roles) - set(INPUT_ROLES):
            raise TypeError(f"{cls.__name__}: reads {sorted(unknown)} / input_roles {cls.input_roles}; expected "
                            f"reads among {READS} and input_roles among {INPUT_ROLES}")

    def __init__(self, params: BaseModel | None = None) -> None:
        self.params = params if params is not None else self.Params()
        #: the registry name (set by ``Registry.build``): the key in run.json, layers.csv and the CSV columns
        self.name = ""
        #: the model's prunable layers (under FSDP, after calibration: those of the gathered model)
        self.layers: list[LayerModules] = []
        #: one slot per decoder layer up to the last prunable one (``layer.index``)
        self.n_layers = 0
        self.device: torch.device | None = None
        self.batch_samples = 1
        self._accumulators: dict[str, tuple[torch.Tensor, str]] = {}

    # -- what calibration calls -------------------------------------------------------------------------
    def setup(self, layers: list[LayerModules], device: torch.device | None = None) -> None:
        """Once before calibration: the model's prunable layers and the device the gradients will be on."""
        self.layers = layers
        self.n_layers = max((lm.index for lm in layers), default=-1) + 1
        self.device = device
        self._accumulators = {}

    def begin_batch(self, n_samples: int) -> None:
        """Before each micro-batch: its gradients are the mean over ``n_samples`` samples (weigh what you
        accumulate by it, so that a mean over micro-batches is a mean over samples whatever the split)."""
        self.batch_samples = n_samples

    def observe_grad(self, layer: LayerModules, role: str, weight: torch.Tensor, grad: torch.Tensor) -> None:
        """One micro-batch's gradient of one prunable weight (``role``: "q" … "down", "q_bias" …), freed
        right after; ``weight`` is the weight it belongs to (whole, also under FSDP)."""

    def observe_input(self, layer: LayerModules, role: str, x: torch.Tensor) -> None:
        """One micro-batch's input to the Linear ``role`` (shape ``[..., in_features]``), forward pass only."""

    def end_batch(self) -> None:
        """After each micro-batch's backward (or forward, when nothing reads gradients)."""

    def observe_mean(self, layer: LayerModules, role: str, weight: torch.Tensor, grad: torch.Tensor | None,
                     sq: torch.Tensor | None) -> None:
        """After the pass, once per piece of the mean gradient: ``grad`` = G (float64), ``sq`` = F (float64,
        the sample-weighted mean of g²), each None unless ``reads`` asks for it, and ``weight``, for the same
        rows of one prunable weight: all of them on one process and under DDP, this rank's under FSDP.
        Whatever is indexed by those rows is a ``rows`` accumulator; sums over them are ``sum``."""

    def state(self) -> dict[str, tuple[torch.Tensor, str]]:
        """Every accumulator with its reduction (``sum``, ``max`` or ``rows``); reduced in place."""
        return dict(self._accumulators)

    def release(self) -> None:
        """After the result was taken: drop the accumulators and the layers (and so the model)."""
        self.layers = []
        self._accumulators = {}

    # -- a helper for accumulators ----------------------------------------------------------------------
    def accumulator(self, name: str, shape: tuple[int, ...] | torch.Size | None = None, op: str = "sum",
                    dtype: torch.dtype = torch.float64) -> torch.Tensor:
        """The accumulator ``name`` (zeros of ``shape``, default ``[n_layers]``, on the gradients' device),
        created on first use; it is in :meth:`state` with reduction ``op``."""
        if name not in self._accumulators:
            if op not in REDUCTIONS:
                raise ValueError(f"accumulator {name!r}: reduction {op!r}; expected one of {REDUCTIONS}")
            size = (self.n_layers,) if shape is None else tuple(shape)
            self._accumulators[name] = (torch.zeros(size, dtype=dtype, device=self.device), op)
        return self._accumulators[name][0]

    # -- what calibration asks --------------------------------------------------------------------------
    @property
    def needs_gradients(self) -> bool:
        """Whether a backward pass must run for this plugin."""
        return bool(set(self.reads))

    @property
    def needs_activations(self) -> bool:
        """Whether forward pre-hooks must run for this plugin."""
        return bool(self.input_roles)

    @property
    def needs_calibration(self) -> bool:
        """Whether calibration data must be run through the model at all."""
        return self.needs_gradients or self.needs_activations


def grad_norm(grad: torch.Tensor) -> torch.Tensor:
    """‖g‖ in fp32 (a 0-d tensor on the gradient's device) of the gradient ``observe_grad`` was given: the
    one the hooks computed for their finiteness check (free), else computed from ``grad`` as it is."""
    held, norm = _DISPATCHED
    return norm if held is grad else fp32_norm(grad)


def fp32_norm(grad: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """‖g‖ accumulated in fp32 from ``grad`` as it is (a bf16 gradient is read once, not copied to fp32
    first); ``out``: an fp32 0-d tensor (or view) to write it into."""
    return torch.linalg.vector_norm(grad, dtype=torch.float32, out=out)


#: the gradient the hooks are dispatching and its norm (:func:`dispatching`)
_DISPATCHED: list[Any] = [None, None]


def dispatching(grad: torch.Tensor | None, norm: torch.Tensor | None = None) -> None:
    """The hooks say which gradient they hand to the plugins now, with its norm (None, None: none)."""
    _DISPATCHED[0], _DISPATCHED[1] = grad, norm
