"""The stages of one run, each a function from what the stages before it returned to its own result.

:func:`gradprune.run.run_experiment` calls them in flow order: load (:func:`load_stage`), the dense
evaluation (:func:`dense_stage`), calibration (:func:`calibration_stage`, then
:func:`evaluation_stage_model`: the model the later stages use), planning (:func:`plan_stage`), the cut
(:func:`cut_stage`, which slices the model in place: the one stage that changes what an earlier one
returned) and the evaluations (:func:`eval_stages`). :class:`Book` keeps each stage's seconds, device and
memory beside them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import signal
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console

from gradprune.errors import CalibrationError
from gradprune.recipe import Recipe


@dataclass
class Loaded:
    """The model ready for calibration, with its prunable layers and identity."""

    model: Any
    tokenizer: Any
    layers: list
    total_params: int
    model_type: str
    identity: str
    #: FSDP loading: the checkpoint (a ``CheckpointIndex``) each rank reads its shards from while ``model`` is
    #: still on the meta device; None when ``model`` holds its weights
    shards_from: Any = None
    #: how the weights were loaded: "full", "sharded" (FSDP, per rank), or "full (why not sharded)"
    loading: str = "full"

    @property
    def holds_weights(self) -> bool:
        """Whether ``model`` has its weights (not on the meta device, waiting for FSDP to read its shards)."""
        return self.shards_from is None


# the pruned model's evaluation stage: (recipe, loaded, console, dense metrics or None) → (metrics, info)
PrunedEval = Callable[[Recipe, Loaded, Console, dict | None], tuple[dict, dict]]


@dataclass
class Book:
    """The run's bookkeeping beside its stages: seconds (``time_<stage>``), the device each stage ran on,
    and the memory plan each stage is entered on."""

    watch: Any
    timings: dict[str, float] = field(default_factory=dict)
    devices: dict[str, str] = field(default_factory=dict)
    started: float = field(default_factory=time.perf_counter)
    #: the float32 matmul precision in effect on the run's device (run.json records it)
    matmul_precision: str | None = None

    @contextlib.contextmanager
    def stage(self, memory: str | None, timing: str | None = None) -> Iterator[None]:
        """Time the block as ``timing`` and enter ``memory`` on the memory watch."""
        if memory is not None and self.watch is not None:
            self.watch.enter(memory)
        t0 = time.perf_counter()
        yield
        if timing is not None:
            self.timings[timing] = time.perf_counter() - t0

    def ran_on(self, stage: str, model: Any) -> None:
        """Record where ``model``'s weights were for ``stage``."""
        from gradprune.trainer import device_of

        self.devices[stage] = device_of(model)


def load_stage(recipe: Recipe, model: Any = None, tokenizer: Any = None, identity: str | None = None) -> Loaded:
    """Load the model as the run's strategy does (FSDP: on the meta device, each rank reading its shards
    later) or take ``model``/``tokenizer`` built by the caller, already on the run's device, named
    ``identity`` for the caches; the evaluation's offline data are checked now (before any work)."""
    from transformers.utils import logging as hf_logging

    from gradprune.models.adapters import get_adapter
    from gradprune.models.loading import model_identity
    from gradprune.strategy import LoadedWeights, strategy_for
    from gradprune.trainer import run_device

    hf_logging.disable_progress_bar()  # our own progress display is enough
    weights = (LoadedWeights(model, tokenizer) if model is not None
               else strategy_for(recipe.trainer).load(recipe.model, run_device(recipe.trainer)))
    model = weights.model
    adapter = get_adapter(model)
    if recipe.eval.run != "none":
        from gradprune.eval import check_eval_config

        check_eval_config(recipe.eval, model.config, load_data=True)  # offline failures surface now
    return Loaded(model, weights.tokenizer, adapter.layers(model), adapter.count_params(model),
                  model.config.model_type, identity or model_identity(recipe.model, model), weights.shards_from,
                  weights.loading)


def materialized(recipe: Recipe, loaded: Loaded) -> Loaded:
    """``loaded`` with real weights: a model still on the meta device (FSDP loading, when no calibration
    pass read its shards: a stored calibration or an estimator that needs none) is loaded whole."""
    if loaded.holds_weights:
        return loaded
    from gradprune.models.loading import load_model
    from gradprune.trainer import run_device

    model, _ = load_model(recipe.model, run_device(recipe.trainer))
    return _replace_model(loaded, model)


def _replace_model(loaded: Loaded, model: Any) -> Loaded:
    from gradprune.models.adapters import get_adapter

    return dataclasses.replace(loaded, model=model, layers=get_adapter(model).layers(model), shards_from=None)


def build_plugins(recipe: Recipe):
    """The recipe's estimator, normalizer and collectors, built from the registries."""
    from gradprune import plugins

    est = plugins.IMPORTANCE.build(recipe.importance.name, recipe.importance.params, "importance.params")
    norm = plugins.NORMALIZERS.build(recipe.normalizer.name, recipe.normalizer.params, "normalizer.params")
    cols = [plugins.COLLECTORS.build(c, recipe.stats.params.get(c), f"stats.params.{c}")
            for c in recipe.stats.collectors]
    return est, norm, cols


def calibration_stage(recipe: Recipe, loaded: Loaded, console: Console, store=None, built=None, watch=None):
    """Draw windows and calibrate (or reuse a stored calibration with the same key); ``built``: the
    recipe's (estimator, normalizer, collectors) when the caller built them already; ``watch``: the run's
    memory plan (where the mean-gradient buffer is kept; where FSDP gathers the model). Returns a
    :class:`gradprune.calibration.CalibrationResult`."""
    from gradprune import plugins
    from gradprune.calibration import calibrate
    from gradprune.data.windows import draw_windows
    from gradprune.parallel import launched_rank
    from gradprune.progress import CalibrationProgress

    est, _, cols = built or build_plugins(recipe)
    key = calibration_key(recipe, loaded.identity)
    if store is not None and (hit := store.get(key)) is not None:
        console.print(f"[dim]calibration reused from cache ({key[:12]})[/]")
        return dataclasses.replace(hit, rank=launched_rank())  # stored by rank 0; under DDP / FSDP every rank reads it
    c = recipe.calibration
    ds = c.dataset.model_dump()
    source = plugins.DATA.build(ds.pop("name"), ds, "calibration.dataset")
    windows = draw_windows(source, loaded.tokenizer, c.seq_len, c.num_samples, c.seed)
    n_batches = -(-c.num_samples // c.batch_size)
    progress = CalibrationProgress(console, n_batches, c.batch_size * c.seq_len) if est.needs_calibration or cols else None
    try:
        with ctrl_c_through_lightning():
            res = calibrate(loaded.model, loaded.layers, windows.input_ids, c.batch_size,
                            {recipe.importance.name: est}, cols, recipe.trainer, progress=progress,
                            gradient_checkpointing=c.gradient_checkpointing, shards_from=loaded.shards_from,
                            gather_to=_gather_to(recipe, watch), mean_gradient=_mean_gradient(watch),
                            check_every=c.check_every)
    except CalibrationError as exc:
        if "non-finite" not in str(exc) or not loaded.holds_weights:
            raise
        where = where_non_finite(loaded.model, loaded.layers, windows.input_ids[: c.batch_size])
        raise CalibrationError(f"{exc}; {where}" if where else str(exc)) from None
    res = dataclasses.replace(res, windows=windows.provenance)
    if store is not None and res.rank == 0:
        store.put(key, res)
    return res


def evaluation_stage_model(recipe: Recipe, loaded: Loaded, calib, watch=None) -> tuple[Loaded, Any]:
    """Rank 0's model for the stages after calibration, and ``calib`` without it: the whole model FSDP
    gathered (spread over this process's GPUs when gathered on the host), else the calibrated one (loaded
    whole if it never left the meta device). Every rank first drops its calibration state and waits for the
    others (what rank 0 reads as the GPUs' free memory must be free)."""
    from gradprune.strategy import strategy_for

    gathered, calib = calib.model, dataclasses.replace(calib, model=None)
    if gathered is not None:
        loaded = _replace_model(loaded, gathered)  # the sharded model goes now
    strategy_for(recipe.trainer).release_ranks()
    if gathered is not None and _gather_to(recipe, watch) == "cpu":  # gathered on the host: spread it
        from gradprune.eval.placement import spread

        loaded = _replace_model(loaded, spread(loaded.model))  # spread() reads the GPUs' free memory
    return materialized(recipe, loaded), calib


def _gather_to(recipe: Recipe, watch) -> str | None:
    """Where rank 0 gathers the model after FSDP calibration: on the host when it is to be spread over the
    process's GPUs (``eval.device_map: auto``, or the plan found it does not fit one), else on its GPU."""
    spread = recipe.eval.device_map == "auto" or (watch is not None and watch.fitted is not None
                                                  and watch.fitted.spread_eval)
    return "cpu" if spread else None


def _mean_gradient(watch) -> str:
    """Where the plan keeps the statistics' mean-gradient buffer: ``device`` (exact, the default) or ``host``."""
    planned = watch is not None and watch.fitted is not None
    return (watch.fitted.plan.workload.mean_gradient if planned else None) or "device"


class _Interrupted(BaseException):
    """Ctrl-C inside Lightning's ``fit``, which would turn a KeyboardInterrupt into ``sys.exit(1)`` (and
    ignore SIGINT from then on); this exception passes through Lightning unchanged."""


@contextlib.contextmanager
def ctrl_c_through_lightning():
    """Ctrl-C in the block raises KeyboardInterrupt (exit 130; a search marks the trial interrupted)."""
    previous = signal.getsignal(signal.SIGINT)
    if threading.current_thread() is not threading.main_thread() or previous is not signal.default_int_handler:
        yield  # signals cannot be set here, or someone else decides what Ctrl-C does
        return

    def interrupted(signum, frame):
        raise _Interrupted

    signal.signal(signal.SIGINT, interrupted)
    try:
        yield
    except _Interrupted:
        raise KeyboardInterrupt from None
    finally:
        signal.signal(signal.SIGINT, previous)


def where_non_finite(model, layers: list, input_ids) -> str:
    """Where NaN/Inf first appears: a weight, else the first attention/MLP block whose output is not finite
    on ``input_ids`` (one forward pass; only run after calibration failed)."""
    import torch

    names = {id(p): n for n, p in model.named_parameters()}
    for lm in layers:
        for role, p in lm.weights().items():
            if not bool(torch.isfinite(p.detach()).all()):
                return f"first non-finite value: layer {lm.index}, {names.get(id(p), role)} holds NaN/Inf as loaded"
    found: list[str] = []

    def check(name):
        def hook(_module, _args, output):
            t = output[0] if isinstance(output, tuple) else output
            if not found and torch.is_tensor(t) and not bool(torch.isfinite(t).all()):
                found.append(name)
        return hook

    device = next(model.parameters()).device
    with contextlib.ExitStack() as stack, torch.no_grad():
        for lm in layers:
            for kind, module in (("attention", lm.attn), ("mlp", lm.mlp)):
                stack.enter_context(module.register_forward_hook(check(f"layer {lm.index} ({kind})")))
        model(input_ids=input_ids.to(device))
    return f"activations first become NaN/Inf in {found[0]} (fp16 overflow?)" if found else ""


def calibration_key(recipe: Recipe, identity: str) -> str:
    """Hash of everything that determines a calibration's scores and statistics."""
    r = recipe.to_dict()
    # "definitions": statistics on the mean gradient and sample-weighted scores (an older cache entry differs)
    key = {"definitions": 2, "model": identity, "dtype": r["model"]["dtype"], "calibration": r["calibration"],
           "importance": r["importance"], "collectors": r["stats"]["collectors"], "precision": r["trainer"]["precision"]}
    if r["stats"]["params"]:  # only then: the keys of earlier stored calibrations stay valid
        key["collector_params"] = r["stats"]["params"]
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()


def dense_stage(recipe: Recipe, loaded: Loaded, console: Console, book: Book):
    """The dense model's metrics (None: not asked) and the proxies' dense reference."""
    from gradprune.eval.proxies import dense_reference

    with book.stage("dense eval", "time_dense_eval"):
        metrics = _dense_eval(recipe, loaded, console)
    if metrics is not None:
        book.ran_on("dense_eval", loaded.model)
    return metrics, dense_reference(loaded.model, loaded.tokenizer, recipe.eval)


def _dense_eval(recipe: Recipe, loaded: Loaded, console: Console) -> dict | None:
    if recipe.eval.run == "none" or not recipe.eval.dense:
        return None
    from gradprune.eval import dense_metrics

    return dense_metrics(loaded.model, loaded.tokenizer, recipe.eval, loaded.identity, console=console)


def plan_stage(recipe: Recipe, loaded: Loaded, calib, normalizer, console: Console, book: Book):
    """The plan from the normalized scores, and the normalizer's and planner's warnings (printed and kept)."""
    from gradprune.importance.normalizers import normalize_scores
    from gradprune.pruning.planner import plan_pruning

    with book.stage(None, "time_planning"), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        plan = plan_pruning(normalize_scores(calib.scores[recipe.importance.name], normalizer), loaded.layers,
                            loaded.total_params, recipe.pruning, loaded.model_type)
    planning_warnings = list(dict.fromkeys(str(w.message) for w in caught))
    for message in planning_warnings:
        console.print(f"warning: {message}", style="yellow", markup=False, highlight=False)
    return plan, planning_warnings


def cut_stage(loaded: Loaded, plan, book: Book) -> int:
    """Slice the model's Linears in place; the parameters left."""
    from gradprune.cut.surgery import apply_plan
    from gradprune.models.adapters import get_adapter

    with book.stage("surgery", "time_surgery"):
        apply_plan(loaded.model, plan)
    book.ran_on("surgery", loaded.model)
    return get_adapter(loaded.model).count_params(loaded.model)


def eval_stages(recipe: Recipe, loaded: Loaded, console: Console, dense, pruned_eval: PrunedEval,
                book: Book) -> tuple[dict, dict, Any]:
    """The pruned model's evaluation (with the proxies against the dense reference) and, when the recipe has
    one, the recovery stage: its metrics (``*_recovered``) join the untuned ones."""
    from gradprune.eval.proxies import proxy_metrics

    dense_metrics, proxy_ref = dense
    with book.stage("eval", "time_eval"):
        proxies, proxy_info = proxy_metrics(loaded.model, proxy_ref) if proxy_ref is not None else ({}, None)
        del proxy_ref, dense  # the dense log-probabilities: up to a few GB of host memory
        metrics, info = pruned_eval(recipe, loaded, console, dense_metrics)
    metrics = {**proxies, **metrics}
    if proxy_info is not None:
        info = {**info, "proxies": proxy_info}
    if recipe.eval.run != "none":
        book.ran_on("eval", loaded.model)
    if recipe.recovery is None:
        return metrics, info, None
    from gradprune.recovery.stage import recovery_stage

    with ctrl_c_through_lightning():  # train, evaluate again; the untuned metrics stay as they are
        recovered = recovery_stage(recipe, loaded.model, loaded.tokenizer, console, dense_metrics, book.watch)
    book.timings.update(recovered.timings)
    book.devices["recovery"] = recovered.info["device"]
    return {**metrics, **recovered.metrics}, info, recovered
