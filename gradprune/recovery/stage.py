"""The recovery stage of a run: train the pruned model, evaluate it again, give back the untuned model.

Between the evaluation of the pruned (untuned) model and the record: the recipe's recovery method
attaches its trainable parts, Lightning trains them on the recovery data, the model is evaluated as
``eval`` asks (the recovered metrics, ``<name>_recovered``), and the method is released, leaving the model
with its untuned weights while the method keeps what it learned (saved with the pruned checkpoint). The
dense and the untuned evaluations are not repeated.
"""

from __future__ import annotations

import contextlib
import resource
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gradprune.progress import report_stage

SUFFIX = "_recovered"


@dataclass
class RecoveryResult:
    """What the stage hands to the record: flat metrics, the run.json section, timings, and the method
    (holding what was learned) for the checkpoint."""

    method: Any
    metrics: dict[str, Any]
    info: dict[str, Any]
    timings: dict[str, float] = field(default_factory=dict)
    save_merged: bool = False

    def checkpoint_extras(self, tokenizer: Any, plan: Any):
        """``save_pruned``'s ``extras``: the method's files into the checkpoint and, when asked, the merged
        model beside them (built from the files just written, on the host)."""
        def extras(folder: Path) -> dict[str, Any]:
            entry = self.method.write(folder)
            if self.save_merged:
                from gradprune.cut.checkpoint import load_pruned, save_pruned
                from gradprune.cut.recovered import MERGED_DIR, RECOVERY_KEY, apply_recovery

                model, _, _ = load_pruned(folder, recovered=False)
                merged = apply_recovery(model, folder, {RECOVERY_KEY: entry}, recovered=True, merge=True)
                note = {RECOVERY_KEY: {"method": entry["method"], "merged_into_weights": True,
                                       "adapter": f"../{entry.get('adapter', '')}"}}
                save_pruned(merged, tokenizer, plan, folder / MERGED_DIR, extras=lambda _: note)
                entry["merged"] = MERGED_DIR
            return {"recovery": entry}

        return extras


def recovered_metrics(metrics: dict[str, Any], dense: dict[str, Any] | None) -> dict[str, Any]:
    """The recovered model's evaluation under the ``_recovered`` names, with its comparison to the dense
    model (``acc_drop_recovered``, ``ppl_ratio_recovered``; the dense numbers are already recorded)."""
    from gradprune.eval import add_dense_comparison

    compared = add_dense_comparison(metrics, dense) if dense else dict(metrics)
    return {f"{k}{SUFFIX}": v for k, v in compared.items() if not k.startswith("dense_")}


def _peak_memory(device: Any, watch: Any = None) -> dict[str, Any]:
    import torch

    if watch is not None and "recovery" in watch.peaks.peaks:
        return {"mb": watch.peaks.peaks["recovery"] / 2**20,
                "measure": f"{watch.peaks.how()}: the recovery stage (run.json memory.stages.recovery)"}
    if device.type == "cuda":
        return {"mb": torch.cuda.max_memory_allocated(device) / 2**20,
                "measure": "torch.cuda.max_memory_allocated during the recovery stage"}
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return {"mb": rss / (2**20 if sys.platform == "darwin" else 2**10),
            "measure": "peak resident memory of the process up to the end of the recovery stage"}


def _training_set(recipe: Any, method: Any, tokenizer: Any):
    """The recovery data, tokenized: at most as many examples as ``max_steps`` reaches."""
    from gradprune import plugins
    from gradprune.recovery.training_data import build_training_set

    p, ds = method.params, recipe.recovery.dataset.model_dump()
    source = plugins.DATA.build(ds.pop("name"), ds, "recovery.dataset")
    source.key = "recovery.dataset"
    limit = None if p.max_steps is None else p.max_steps * p.batch_size
    return build_training_set(source, tokenizer, p.cutoff_len, p.train_on_inputs, limit)


@contextlib.contextmanager
def _attached(method: Any, model: Any, seed: int) -> Iterator[list]:
    """Inside: ``method`` attached to ``model``, only its parameters trainable (yielded). After, however the
    block ends: released, and every parameter's ``requires_grad`` as before."""
    import torch

    flags = {n: t.requires_grad for n, t in model.named_parameters()}
    device = next(model.parameters()).device
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)  # the adapters' initial weights and dropout
        model.requires_grad_(False)
        try:
            trainable = method.attach(model)
            for t in trainable:
                t.requires_grad_(True)
            yield trainable
        finally:
            method.release(model)
            for n, t in model.named_parameters():
                t.requires_grad_(flags.get(n, t.requires_grad))


def recovery_stage(recipe: Any, model: Any, tokenizer: Any, console: Any, dense: dict | None = None,
                   watch: Any = None) -> RecoveryResult:
    """Recover ``model`` (pruned, on the run's device) as ``recipe.recovery`` asks and evaluate it again;
    the model is left untuned (and the method holds the adapter) however the stage ends. ``watch``: the run's
    :class:`~gradprune.memory.watch.MemoryWatch`, which measures the training (``recovery``) and the
    evaluation after it (``recovered eval``) as stages of their own, beside the plan's estimates."""
    import torch

    from gradprune import plugins
    from gradprune.progress import CalibrationProgress
    from gradprune.recovery.module import fit_recovery, total_steps

    section = recipe.recovery
    method = plugins.RECOVERY.build(section.name, section.params, "recovery.params")
    p = method.params
    if watch is not None:
        watch.enter("recovery")
    report_stage("recovering", "data")
    data = _training_set(recipe, method, tokenizer)
    device = next(model.parameters()).device
    if device.type == "cuda" and watch is None:
        torch.cuda.reset_peak_memory_stats(device)
    _, micro = total_steps(len(data.examples), p)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    progress = CalibrationProgress(console, micro, data.tokens / len(data.examples) * p.micro_batch_size,
                                   label="recovering", after=("recovered eval", ""))
    t0 = time.perf_counter()
    with _attached(method, model, p.seed) as trainable:
        fit = fit_recovery(model, trainable, data, p, recipe.trainer, pad, progress)
        del progress
        t_train = time.perf_counter() - t0
        if watch is not None:
            watch.enter("recovered eval")  # closes the training's stage: its peak is measured
        peak = _peak_memory(device, watch)
        _say(console, method, fit)
        metrics, eval_info = _evaluate(recipe, model, tokenizer, console, dense)
        summary = method.summary()
    timings = {"time_recovery": t_train, "time_eval_recovered": time.perf_counter() - t0 - t_train}
    return _result(method, fit, data, peak, metrics, {**summary, "device": str(device),
                   "precision": recipe.trainer.precision, "eval": eval_info}, timings, section.save_merged)


def _result(method: Any, fit: Any, data: Any, peak: dict, metrics: dict, info: dict, timings: dict,
            save_merged: bool) -> RecoveryResult:
    from gradprune.recovery.module import total_steps

    curve = [[s, round(loss, 6), lr] for s, loss, lr in fit.curve]
    metrics = {**metrics,
               "recovery_steps": fit.steps, "recovery_tokens": fit.tokens, "recovery_trained_tokens": fit.trained_tokens,
               "recovery_loss_first": curve[0][1] if curve else None,
               "recovery_loss_final": curve[-1][1] if curve else None,
               "recovery_tokens_per_s": fit.tokens_per_s, "recovery_peak_memory_mb": peak["mb"],
               "recovery_trainable_params": info.get("trainable_params")}
    info = {"method": method.name, "params": method.params.model_dump(mode="json"), "data": data.provenance,
            **info, "steps": fit.steps, "planned_steps": total_steps(len(data.examples), method.params)[0],
            "micro_batches": fit.micro_batches, "tokens": fit.tokens, "trained_tokens": fit.trained_tokens,
            "seconds": fit.seconds, "tokens_per_s": fit.tokens_per_s, "peak_memory": peak,
            "loss_curve": curve, "loss_curve_columns": ["step", "loss", "lr"]}
    return RecoveryResult(method, metrics, info, timings, save_merged)


def _evaluate(recipe: Any, model: Any, tokenizer: Any, console: Any, dense: dict | None) -> tuple[dict, dict]:
    if recipe.eval.run == "none":
        return {}, {"run": "none"}
    from gradprune.eval import evaluate

    res = evaluate(model, tokenizer, recipe.eval, console=console, title="recovered")
    return recovered_metrics(res.metrics, dense), res.info


def _say(console: Any, method: Any, fit: Any) -> None:
    first, last = (fit.curve[0][1], fit.curve[-1][1]) if fit.curve else (float("nan"), float("nan"))
    console.print(f"{method.name}: {fit.steps} steps, {fit.tokens:,} tokens, {fit.seconds:.1f} s "
                  f"({fit.tokens_per_s:,.0f} tok/s), loss {first:.3f} → {last:.3f}", markup=False, highlight=False)
