"""One pruning experiment: recipe → load → calibrate → score → plan → cut → evaluate → record.

``run_experiment`` reads as the flow: each stage (:mod:`gradprune.stages`) is one call that takes what the
ones before returned and returns its own result, and the record written to run.json is built from those
results in one place (:func:`_record`). ``run_experiment`` is what the search calls per trial;
``run_from_cli`` adds the output-dir guard and the console output.
"""

from __future__ import annotations

import contextlib
import contextvars
import gc
import importlib
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console

from gradprune.errors import RecipeError
from gradprune.recipe import Recipe, load_recipe
from gradprune.stages import (
    Book,
    Loaded,
    PrunedEval,
    build_plugins,
    calibration_stage,
    cut_stage,
    dense_stage,
    eval_stages,
    evaluation_stage_model,
    load_stage,
    materialized,
    plan_stage,
)


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


def run_experiment(recipe: Recipe, console: Console | None = None, store=None, keep_model: bool = False,
                   pruned_eval: PrunedEval | None = None, loaded: Loaded | None = None,
                   loader: Callable[[Recipe], Loaded] | None = None) -> RunOutput:
    """Run every stage and return the record (nothing is written here).

    ``pruned_eval(recipe, loaded, console, dense_metrics) -> (metrics, info)`` replaces the evaluation of
    the pruned model (the search's successive halving evaluates in rungs); by default :func:`_pruned_eval`.
    ``loaded`` skips loading (a model the caller built, e.g. a benchmark's random model on the GPU);
    ``loader(recipe)`` replaces :func:`load_stage` (default: the one :func:`trial_loader` set, e.g. a search
    worker's host copy of the dense model). The memory plan is made first, from the model's config, with
    the model-bounded recipe values (:func:`gradprune.preflight.model_bound_problems`); running out of
    memory raises a :class:`~gradprune.errors.DeviceMemoryError` naming the stage. Nothing the run
    allocated stays reachable after it returns or raises."""
    import torch

    from gradprune.memory.release import forget_frames, free_device_cache

    _preload(recipe)  # before this run's frames exist (see _preload)
    watch, recipe = _memory_watch(recipe, loaded)
    console, book, failure = console or Console(), Book(watch), None
    try:
        loaded = _load(recipe, loaded, loader or _LOADER.get() or load_stage, book)
        est, normalizer, collectors = build_plugins(recipe)
        if not (est.needs_calibration or collectors):
            loaded = materialized(recipe, loaded)  # no calibration pass would read the shards
        # the dense reference needs the weights: with FSDP loading they exist only after calibration
        dense = dense_stage(recipe, loaded, console, book) if loaded.holds_weights else None
        with book.stage("calibration", "time_calibration"):
            calib = calibration_stage(recipe, loaded, console, store, (est, normalizer, collectors), watch)
            del est  # its accumulators went with calibration; nothing else needs it
            book.devices["calibration"] = calib.device or book.devices["load"]
            if calib.rank != 0:  # DDP / FSDP: only rank 0 plans, evaluates and writes
                return _other_rank(recipe, calib.rank, loaded)
            loaded, calib = evaluation_stage_model(recipe, loaded, calib, watch)
        dense = dense or dense_stage(recipe, loaded, console, book)
        plan, planning_warnings = plan_stage(recipe, loaded, calib, normalizer, console, book)
        params_after = cut_stage(loaded, plan, book)
        metrics, ev_info, recovered = eval_stages(recipe, loaded, console, dense, pruned_eval or _pruned_eval, book)
        record, rows = _record(recipe, loaded, calib, collectors, plan, planning_warnings, params_after, metrics,
                               ev_info, recovered, book)
        return RunOutput(record, rows, list(calib.layer_stats), plan, calib.scores[recipe.importance.name],
                         loaded.model if keep_model else None, loaded.tokenizer if keep_model else None,
                         book.timings, recovery=recovered, calibration_reused=calib.reused_calibration)
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
    above it with its locals (``run_experiment``'s: the model): imported inside a stage, they would keep
    that run's model alive until Python's cycle collector ran. Imported here, before the run allocates,
    that garbage is collected at once, the first time only (later runs import nothing new)."""
    needed = ["lightning", "transformers"]
    if recipe.eval.run in ("all", "zeroshot"):
        needed.append("lm_eval.models.huggingface")
    fresh = [m for m in needed if m not in sys.modules]
    for name in fresh:
        importlib.import_module(name)
    if fresh:  # the imports' garbage only: this run has allocated nothing yet
        gc.collect()


def _memory_watch(recipe: Recipe, loaded: Loaded | None):
    """The run's memory plan (from the config of ``loaded``'s model, else of the recipe's) and the recipe
    with ``calibration.batch_size: auto`` settled; the recipe values the config bounds are checked first."""
    from gradprune.memory.watch import MemoryWatch
    from gradprune.preflight import model_bound_problems

    if loaded is not None:
        config = loaded.model.config
    else:
        from gradprune.models.loading import checked_config

        _, config = checked_config(recipe.model)
    problems = model_bound_problems(recipe, config)
    if problems:
        raise RecipeError("; ".join(problems))
    return MemoryWatch.for_run(recipe, config)


def _load(recipe: Recipe, loaded: Loaded | None, loader: Callable[[Recipe], Loaded], book: Book) -> Loaded:
    """The load stage (``loaded``: the caller's model), and the float32 matmul precision for its device."""
    from gradprune.trainer import float32_matmul_precision

    with book.stage("load", "time_load"):
        loaded = loaded or loader(recipe)
    book.ran_on("load", loaded.model)
    book.matmul_precision = float32_matmul_precision(recipe.trainer, book.devices["load"].split(",")[0])
    return loaded


def _other_rank(recipe: Recipe, rank: int, loaded: Loaded) -> RunOutput:
    """A rank other than 0 after calibration: it drops its model (its FSDP shards) and waits for the others
    before rank 0 reads the GPUs' free memory; it has nothing else to do."""
    from gradprune.strategy import strategy_for

    del loaded
    strategy_for(recipe.trainer).release_ranks()
    return RunOutput({}, [], [], None, {}, rank=rank)


def _record(recipe: Recipe, loaded: Loaded, calib, collectors: list, plan, planning_warnings: list[str],
            params_after: int, metrics: dict, ev_info: dict, recovered, book: Book) -> tuple[dict, list[dict]]:
    """run.json's record (built here, in one place, from the stages' results) and layers.csv's rows."""
    from gradprune.record import layer_rows, run_metrics, versions

    rows = layer_rows(loaded.layers, plan, calib.layer_stats, recipe.stats.extreme_threshold)
    book.timings["time_total"] = time.perf_counter() - book.started
    record = {
        "recipe": recipe.to_dict(),
        "metrics": run_metrics(recipe, loaded.total_params, params_after, calib, rows, metrics, book.timings),
        "model": {"name_or_path": recipe.model.name_or_path, "identity": loaded.identity,
                  "model_type": loaded.model_type, "n_layers": len(loaded.layers),
                  "params_before": loaded.total_params, "params_after": params_after, "loading": loaded.loading,
                  "trust_remote_code": recipe.model.trust_remote_code},
        "calibration": calib.record(),
        "stats": {"per_layer": calib.layer_stats, "threshold": recipe.stats.extreme_threshold,
                  "definitions": {c.name: c.definition or type(c).__doc__ or "" for c in collectors},
                  "micro_batch_size": calib.micro_batch_size},
        "eval": ev_info,
        "timings": book.timings,
        "devices": book.devices,
        "float32_matmul_precision": book.matmul_precision,
        "planning": {"warnings": planning_warnings, "emptied_layers": plan.meta.get("emptied_layers"),
                     "achieved_ratio": plan.meta.get("achieved_ratio")},
        "dtype": str(next(loaded.model.parameters()).dtype).removeprefix("torch."),
        "seed": recipe.calibration.seed,
    }
    if recovered is not None:
        record["recovery"] = recovered.info
    record["versions"] = versions()
    record["memory"] = book.watch.record()
    return record, rows


def _pruned_eval(recipe: Recipe, loaded: Loaded, console: Console, dense: dict | None) -> tuple[dict, dict]:
    if recipe.eval.run == "none":
        return {}, {"run": "none"}
    from gradprune.eval import add_dense_comparison, evaluate

    res = evaluate(loaded.model, loaded.tokenizer, recipe.eval, console=console)
    metrics = add_dense_comparison(res.metrics, dense) if dense else dict(res.metrics)
    return metrics, res.info


def run_from_cli(recipe_path: str, overrides: list[str], overwrite: bool = False) -> int:
    """``gradprune run``: validate, guard the output dir, preflight, run, write, print the summary."""
    from gradprune.parallel import launched_rank
    from gradprune.preflight import preflight
    from gradprune.progress import layer_table, print_plain, summary_table
    from gradprune.record import check_output_dir, write_output_or_show

    recipe = load_recipe(recipe_path, overrides)
    out_dir = check_output_dir(recipe.output.dir, overwrite)
    # every problem the recipe, the model's config, the data and this machine show, before anything loads
    report = preflight(recipe, out_dir=out_dir)
    console = Console(quiet=launched_rank() > 0)  # DDP / FSDP: the other ranks re-run this command silently
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
