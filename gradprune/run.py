"""One pruning experiment: recipe → load → calibrate → score → plan → cut → evaluate → record.

Each stage takes plain data from the one before and returns plain data. ``run_experiment`` is what
the search calls per trial; ``run_from_cli`` adds the output-dir guard and the console output.
"""

from __future__ import annotations

import contextlib
import contextvars
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console

from gradprune.errors import CalibrationError, RecipeError
from gradprune.recipe import Recipe, load_recipe


@dataclass
class Loaded:
    """The model ready for calibration, with its prunable layers and identity."""

    model: Any
    tokenizer: Any
    layers: list
    total_params: int
    model_type: str
    identity: str
    #: FSDP: the checkpoint each rank reads its shards from, while ``model`` is still on the meta device
    weights: Any = None
    #: how the weights were loaded: "full", "sharded" (FSDP, per rank), or "full (why not sharded)"
    loading: str = "full"


@dataclass
class RunOutput:
    """Everything a run produced, before it is written."""

    record: dict
    layer_rows: list[dict]
    stat_names: list[str]
    plan: Any
    scores: dict
    model: Any = None
    tokenizer: Any = None
    timings: dict = field(default_factory=dict)
    #: DDP / FSDP: this process's rank; only rank 0 plans, evaluates and has a record (the others return
    #: right after calibration with everything else empty)
    rank: int = 0
    #: the recovery stage's result (``gradprune.recovery.stage.RecoveryResult``) when the recipe has one;
    #: ``model`` is the untuned pruned model either way
    recovery: Any = None
    #: the calibration came from the search's store (not run again)
    calibration_reused: bool = False

    @property
    def writes(self) -> bool:
        """Whether this process holds the run's results (rank 0)."""
        return self.rank == 0


# the pruned model's evaluation stage: (recipe, loaded, console, dense metrics or None) → (metrics, info)
PrunedEval = Callable[[Recipe, Loaded, Console, dict | None], tuple[dict, dict]]


def load_stage(recipe: Recipe, model: Any = None, tokenizer: Any = None, identity: str | None = None) -> Loaded:
    """Load the model onto the run's device (or take ``model``/``tokenizer`` built by the caller, already on
    it, named ``identity`` for the caches) and check every model-dependent recipe value before any work."""
    from transformers.utils import logging as hf_logging

    from gradprune.models.adapters import get_adapter
    from gradprune.models.loading import load_model, model_identity
    from gradprune.parallel import is_fsdp
    from gradprune.pruning.planner import allowed_layers
    from gradprune.trainer import run_device

    hf_logging.disable_progress_bar()  # our own progress display is enough
    weights, loading = None, "full"
    if model is None and is_fsdp(recipe.trainer):
        from gradprune.models.shard_loading import load_empty

        model, tok, weights, why = load_empty(recipe.model)
        loading = "sharded" if weights is not None else f"full ({why})"
    if model is None:
        model, tok = load_model(recipe.model, run_device(recipe.trainer))
    elif weights is None:
        tok = tokenizer
    adapter = get_adapter(model)
    layers = adapter.layers(model)
    max_pos = getattr(model.config, "max_position_embeddings", None)
    if max_pos is not None and recipe.calibration.seq_len > max_pos:
        raise RecipeError(f"calibration.seq_len={recipe.calibration.seq_len} is above the model's "
                          f"max_position_embeddings={max_pos}")
    allowed_layers(len(layers), recipe.pruning.attention_layers, "attention_layers")
    allowed_layers(len(layers), recipe.pruning.mlp_layers, "mlp_layers")
    if recipe.eval.run != "none":
        from gradprune.eval import check_eval_config

        check_eval_config(recipe.eval, model.config, load_data=True)  # offline failures surface now
    return Loaded(model, tok, layers, adapter.count_params(model), model.config.model_type,
                  identity or model_identity(recipe.model, model), weights, loading)


def materialized(recipe: Recipe, loaded: Loaded) -> Loaded:
    """``loaded`` with real weights: a model still on the meta device (FSDP loading, when no calibration
    pass read its shards: a stored calibration or an estimator that needs none) is loaded whole."""
    if loaded.weights is None:
        return loaded
    from gradprune.models.loading import load_model
    from gradprune.trainer import run_device

    model, _ = load_model(recipe.model, run_device(recipe.trainer))
    return _replace_model(loaded, model)


def _replace_model(loaded: Loaded, model: Any) -> Loaded:
    from gradprune.models.adapters import get_adapter

    return Loaded(model, loaded.tokenizer, get_adapter(model).layers(model), loaded.total_params,
                  loaded.model_type, loaded.identity, None, loaded.loading)


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
    memory plan (where the mean-gradient buffer is kept; where FSDP gathers the model)."""
    from gradprune import plugins
    from gradprune.calibration import calibrate
    from gradprune.data.windows import draw_windows
    from gradprune.progress import CalibrationProgress

    est, _, cols = built or build_plugins(recipe)
    key = calibration_key(recipe, loaded.identity)
    if store is not None and (hit := store.get(key)) is not None:
        console.print(f"[dim]calibration reused from cache ({key[:12]})[/]")
        hit.rank = _launched_rank()  # stored by rank 0; under DDP / FSDP every rank reads it
        return hit
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
                            gradient_checkpointing=c.gradient_checkpointing, weights=loaded.weights,
                            gather_to=_gather_to(recipe, watch), mean_gradient=_mean_gradient(watch),
                            check_every=c.check_every)
    except CalibrationError as exc:
        if "non-finite" not in str(exc) or loaded.weights is not None:
            raise
        where = where_non_finite(loaded.model, loaded.layers, windows.input_ids[: c.batch_size])
        raise CalibrationError(f"{exc}; {where}" if where else str(exc)) from None
    res.info["windows"] = windows.provenance
    if store is not None and res.rank == 0:
        store.put(key, res)
    return res


def _gather_to(recipe: Recipe, watch) -> str | None:
    """Where rank 0 gathers the model after FSDP calibration: on the host when it is to be spread over the
    process's GPUs (``eval.device_map: auto``, or the plan found it does not fit one), else on its GPU."""
    spread = recipe.eval.device_map == "auto" or (watch is not None and watch.fitted is not None
                                                  and watch.fitted.spread_eval)
    return "cpu" if spread else None


def _ranks_released() -> None:
    """After calibration: this process's cached GPU memory goes back to the device and, under DDP / FSDP,
    every rank waits until all have dropped their calibration state, so that what rank 0 reads as free
    memory (spreading the gathered model) is free."""
    from gradprune.memory.release import free_device_cache

    free_device_cache()
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


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
    import signal
    import threading

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
    import hashlib
    import json

    r = recipe.to_dict()
    # "definitions": statistics on the mean gradient and sample-weighted scores (an older cache entry differs)
    key = {"definitions": 2, "model": identity, "dtype": r["model"]["dtype"], "calibration": r["calibration"],
           "importance": r["importance"], "collectors": r["stats"]["collectors"], "precision": r["trainer"]["precision"]}
    if r["stats"]["params"]:  # only then: the keys of earlier stored calibrations stay valid
        key["collector_params"] = r["stats"]["params"]
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()


def run_experiment(recipe: Recipe, console: Console | None = None, store=None, keep_model: bool = False,
                   pruned_eval: PrunedEval | None = None, loaded: Loaded | None = None,
                   loader: Callable[[Recipe], Loaded] | None = None) -> RunOutput:
    """Run every stage and return the record (nothing is written here).

    ``pruned_eval(recipe, loaded, console, dense_metrics) -> (metrics, info)`` replaces the evaluation of
    the pruned model (the search's successive halving evaluates in rungs); by default :func:`_pruned_eval`.
    ``loaded`` skips loading (a model the caller built, e.g. a benchmark's random model on the GPU);
    ``loader(recipe)`` replaces :func:`load_stage` (default: the one :func:`trial_loader` set, e.g. a search
    worker's host copy of the dense model, :class:`gradprune.search.dense_copy.DenseCopy`). Every stage
    runs on the device the model was loaded onto; ``record["devices"]`` says where each ran.

    The memory plan is made first, from the model's config (``calibration.batch_size: auto`` becomes the
    micro-batch it picks; a recipe that fits nowhere is refused before any weight loads), and each stage's
    measured peak is recorded beside its estimate (``record["memory"]``). Running out of memory anyway
    raises a :class:`~gradprune.errors.DeviceMemoryError` naming the stage, the estimate and the setting.
    Nothing the run allocated stays reachable after it returns or raises.
    """
    import torch

    from gradprune.memory.release import forget_frames, free_device_cache

    _preload(recipe)  # before this run's frames exist (see _preload)
    watch, recipe = _memory_watch(recipe, loaded)
    failure = None
    try:
        return _run_stages(recipe, console, store, keep_model, pruned_eval, loaded, watch,
                           loader or _LOADER.get() or load_stage)
    except (torch.OutOfMemoryError, MemoryError) as exc:
        failure = " ".join(str(exc).split())
        forget_frames(exc)  # the frames hold the model and the buffers that did not fit
    finally:
        watch.close()  # the running stage's evaluation budget goes with the run
        free_device_cache()
    raise watch.out_of_memory(failure)


_LOADER: contextvars.ContextVar[Callable[[Recipe], Loaded] | None] = contextvars.ContextVar("loader", default=None)


@contextlib.contextmanager
def trial_loader(loader: Callable[[Recipe], Loaded]):
    """Inside the block, :func:`run_experiment` loads the model with ``loader`` (a search worker sets its
    host copy of the dense weights around each trial)."""
    token = _LOADER.set(loader)
    try:
        yield
    finally:
        _LOADER.reset(token)


def _preload(recipe: Recipe) -> None:
    """Import the libraries a run uses before the run holds anything. Importing some of them leaves garbage
    reference cycles that hold the frames of the import, and so, through each frame's caller, every frame
    above it with its locals: imported inside a stage, they would keep that run's model alive until
    Python's cycle collector ran."""
    import lightning  # noqa: F401
    import transformers  # noqa: F401

    if recipe.eval.run in ("all", "zeroshot"):
        import lm_eval.models.huggingface  # noqa: F401


def _memory_watch(recipe: Recipe, loaded: Loaded | None):
    """The run's memory plan (from the config of ``loaded``'s model, else of the recipe's) and the recipe
    with ``calibration.batch_size: auto`` settled."""
    from gradprune.memory.watch import MemoryWatch

    if loaded is not None:
        config = loaded.model.config
    else:
        from gradprune.models.loading import checked_config

        _, config = checked_config(recipe.model)
    return MemoryWatch.for_run(recipe, config)


def _run_stages(recipe: Recipe, console: Console | None, store, keep_model: bool, pruned_eval: PrunedEval | None,
                loaded: Loaded | None, watch, loader: Callable[[Recipe], Loaded]) -> RunOutput:
    """The stages of :func:`run_experiment`, each entered on ``watch``."""
    from gradprune.cut.surgery import apply_plan
    from gradprune.importance.normalizers import normalize_scores
    from gradprune.pruning.planner import plan_pruning
    from gradprune.record import layer_rows, run_metrics, versions
    from gradprune.trainer import device_of, float32_matmul_precision

    console = console or Console()
    t: dict[str, float] = {}
    devices: dict[str, str] = {}
    t0 = time.perf_counter()
    watch.enter("load")
    loaded = loaded or loader(recipe)
    t["time_load"] = time.perf_counter() - t0
    devices["load"] = device_of(loaded.model)
    matmul_precision = float32_matmul_precision(recipe.trainer, devices["load"].split(",")[0])
    est, normalizer, collectors = build_plugins(recipe)
    if not (est.needs_calibration or collectors):
        loaded = materialized(recipe, loaded)  # no calibration pass would read the shards
    # the dense reference needs the weights: with FSDP loading they exist only after calibration gathered them
    dense_first = loaded.weights is None
    dense, proxy_ref = _dense_stage(recipe, loaded, console, t, devices, watch) if dense_first else (None, None)
    t1 = time.perf_counter()
    watch.enter("calibration")
    calib = calibration_stage(recipe, loaded, console, store, (est, normalizer, collectors), watch)
    del est  # its accumulators went with calibration; nothing else needs it
    devices["calibration"] = calib.info.get("device", devices["load"])
    if getattr(calib, "rank", 0) != 0:
        # DDP / FSDP: every rank re-runs the command; only rank 0 plans, evaluates and writes
        loaded = None  # this rank's model (its FSDP shards) goes before rank 0 reads the GPUs' free memory
        _ranks_released()
        return RunOutput({}, [], [], None, {}, rank=calib.rank)
    gathered = calib.model is not None
    if gathered:  # FSDP: the full model rank 0 gathered replaces the sharded one
        loaded, calib.model = _replace_model(loaded, calib.model), None  # the sharded model goes now
    _ranks_released()
    if gathered and _gather_to(recipe, watch) == "cpu":  # gathered on the host: spread over this process's GPUs
        from gradprune.eval.placement import spread

        loaded = _replace_model(loaded, spread(loaded.model))  # spread() reads the GPUs' free memory
    loaded = materialized(recipe, loaded)  # a stored calibration: nothing was gathered
    t["time_calibration"] = time.perf_counter() - t1
    if not dense_first:
        dense, proxy_ref = _dense_stage(recipe, loaded, console, t, devices, watch)
    t1 = time.perf_counter()
    raw = calib.scores[recipe.importance.name]
    import warnings

    with warnings.catch_warnings(record=True) as caught:  # the normalizer's and planner's warnings, recorded
        warnings.simplefilter("always")
        plan = plan_pruning(normalize_scores(raw, normalizer), loaded.layers, loaded.total_params, recipe.pruning,
                            loaded.model_type)
    planning_warnings = list(dict.fromkeys(str(w.message) for w in caught))
    for message in planning_warnings:
        console.print(f"warning: {message}", style="yellow", markup=False, highlight=False)
    t["time_planning"] = time.perf_counter() - t1
    rows = layer_rows(loaded.layers, plan, calib.layer_stats, recipe.stats.extreme_threshold)
    t1 = time.perf_counter()
    watch.enter("surgery")
    apply_plan(loaded.model, plan)
    t["time_surgery"] = time.perf_counter() - t1
    devices["surgery"] = device_of(loaded.model)
    from gradprune.models.adapters import get_adapter

    params_after = get_adapter(loaded.model).count_params(loaded.model)
    t1 = time.perf_counter()
    watch.enter("eval")
    from gradprune.eval.proxies import proxy_metrics

    proxies, proxy_info = proxy_metrics(loaded.model, proxy_ref) if proxy_ref is not None else ({}, None)
    del proxy_ref  # the dense log-probabilities: up to a few GB of host memory
    ev_metrics, ev_info = (pruned_eval or _pruned_eval)(recipe, loaded, console, dense)
    ev_metrics = {**proxies, **ev_metrics}
    if proxy_info is not None:
        ev_info = {**ev_info, "proxies": proxy_info}
    t["time_eval"] = time.perf_counter() - t1
    if recipe.eval.run != "none":
        devices["eval"] = device_of(loaded.model)
    recovered = None
    if recipe.recovery is not None:  # train, evaluate again; the untuned metrics stay as they are
        from gradprune.recovery.stage import recovery_stage

        with ctrl_c_through_lightning():
            recovered = recovery_stage(recipe, loaded.model, loaded.tokenizer, console, dense, watch)
        ev_metrics = {**ev_metrics, **recovered.metrics}
        t.update(recovered.timings)
        devices["recovery"] = recovered.info["device"]
    t["time_total"] = time.perf_counter() - t0
    metrics = run_metrics(recipe, loaded.total_params, params_after, calib, rows, ev_metrics, t)
    record = {
        "recipe": recipe.to_dict(),
        "metrics": metrics,
        "model": {"name_or_path": recipe.model.name_or_path, "identity": loaded.identity,
                  "model_type": loaded.model_type, "n_layers": len(loaded.layers),
                  "params_before": loaded.total_params, "params_after": params_after, "loading": loaded.loading,
                  "trust_remote_code": recipe.model.trust_remote_code},
        "calibration": {"batches": calib.batches, "tokens": calib.tokens, "seconds": calib.seconds,
                        "tokens_per_s": calib.tokens_per_s, "mean_loss": calib.mean_loss, **calib.info},
        "stats": {"per_layer": calib.layer_stats, "threshold": recipe.stats.extreme_threshold,
                  "definitions": {c.name: c.definition or type(c).__doc__ or "" for c in collectors},
                  "micro_batch_size": calib.info.get("micro_batch_size")},
        "eval": ev_info,
        "timings": t,
        "devices": devices,
        "float32_matmul_precision": matmul_precision,
        "planning": {"warnings": planning_warnings, "emptied_layers": plan.meta.get("emptied_layers"),
                     "achieved_ratio": plan.meta.get("achieved_ratio")},
        "dtype": str(next(loaded.model.parameters()).dtype).removeprefix("torch."),
        "seed": recipe.calibration.seed,
    }
    if recovered is not None:
        record["recovery"] = recovered.info
    record["versions"] = versions()
    record["memory"] = watch.record()
    return RunOutput(record, rows, list(calib.layer_stats), plan, raw,
                     loaded.model if keep_model else None, loaded.tokenizer if keep_model else None, t,
                     recovery=recovered, calibration_reused=bool(calib.info.get("reused_calibration", False)))


def _dense_stage(recipe: Recipe, loaded: Loaded, console: Console, t: dict, devices: dict, watch=None):
    """The dense model's metrics (None: not asked) and the proxies' dense reference."""
    from gradprune.eval.proxies import dense_reference
    from gradprune.trainer import device_of

    if watch is not None:
        watch.enter("dense eval")
    t0 = time.perf_counter()
    dense = _dense_eval(recipe, loaded, console)
    t["time_dense_eval"] = time.perf_counter() - t0
    if dense is not None:
        devices["dense_eval"] = device_of(loaded.model)
    return dense, dense_reference(loaded.model, loaded.tokenizer, recipe.eval)


def _dense_eval(recipe: Recipe, loaded: Loaded, console: Console) -> dict | None:
    if recipe.eval.run == "none" or not recipe.eval.dense:
        return None
    from gradprune.eval import dense_metrics

    return dense_metrics(loaded.model, loaded.tokenizer, recipe.eval, loaded.identity, console=console)


def _pruned_eval(recipe: Recipe, loaded: Loaded, console: Console, dense: dict | None) -> tuple[dict, dict]:
    if recipe.eval.run == "none":
        return {}, {"run": "none"}
    from gradprune.eval import add_dense_comparison, evaluate

    res = evaluate(loaded.model, loaded.tokenizer, recipe.eval, console=console)
    metrics = add_dense_comparison(res.metrics, dense) if dense else dict(res.metrics)
    return metrics, res.info


def _launched_rank() -> int:
    """This process's rank when a launcher started it (Lightning's re-run of the command, torchrun, SLURM)."""
    import os

    for var in ("RANK", "LOCAL_RANK", "SLURM_PROCID"):
        if os.environ.get(var, "").isdigit():
            return int(os.environ[var])
    return 0


def run_from_cli(recipe_path: str, overrides: list[str], overwrite: bool = False) -> int:
    """``gradprune run``: validate, guard the output dir, preflight, run, write, print the summary."""
    from gradprune.preflight import preflight
    from gradprune.progress import layer_table, print_plain, summary_table
    from gradprune.record import check_output_dir, write_output_or_show

    recipe = load_recipe(recipe_path, overrides)
    out_dir = check_output_dir(recipe.output.dir, overwrite)
    # every problem the recipe, the model's config, the data and this machine show, before anything loads
    report = preflight(recipe, out_dir=out_dir)
    console = Console(quiet=_launched_rank() > 0)  # DDP / FSDP: the other ranks re-run this command silently
    from rich.text import Text  # not markup: the path and the model name are the user's text

    console.print(Text("gradprune run", style="bold") + Text(f" {recipe_path}: {recipe.model.name_or_path}, "
                  f"{recipe.importance.name} → {recipe.pruning.scope} {recipe.pruning.ratio:.0%}"))
    print_plain(console, report.describe(), style="dim")
    out = run_experiment(recipe, console, keep_model=recipe.output.save_model)
    if not out.writes:
        return 0
    console.print(layer_table(out.layer_rows, out.stat_names))
    console.print(summary_table(out.record["metrics"]))  # before writing: a full disk must not lose them
    path = write_output_or_show(out, out_dir, recipe.output.save_model, console)
    from gradprune.tracking import log_run

    log_run(recipe, out_dir)  # the recipe's tracker (if any) gets what was just written; a failure only warns
    print_plain(console, f"wrote {path} and {out_dir / 'layers.csv'}")
    if recipe.output.save_model:
        model_dir = str(out_dir / "model")
        what = "pruned model (untuned weights + recovery adapter)" if out.recovery is not None else "pruned model"
        print_plain(console, f"{what} in {model_dir} — load it with gradprune.load_pruned({model_dir!r})")
    return 0
