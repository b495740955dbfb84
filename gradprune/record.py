"""The record stage: what a run's files hold and writing them.

``run.json`` holds everything (recipe, the flat :func:`run_metrics`, stats, timings, :func:`versions`),
``layers.csv`` one :func:`layer_rows` row per layer, ``plan.json`` the plan. :func:`write_output` writes
them aside and swaps them in whole, ``run.json`` last, so its presence means the run is complete.
:func:`check_output_dir` guards the folder these files go to.
"""

from __future__ import annotations

import csv
import io
import json
import math
import platform
from functools import reduce
from importlib import metadata
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from gradprune.files import atomic_write_bytes, check_space, failures_named, json_text, staged_dir, swap_in
from gradprune.original_names import ORIGINAL_SETTINGS
from gradprune.outputs import refuse_existing
from gradprune.stats.summary import extreme_layers, ratio_summary

# what a run writes into output.dir (plan.json, layers.csv, run.json here; the scores and the pruned
# model by write_output below)
RESULT_FILES = ("run.json", "layers.csv", "plan.json", "scores.safetensors", "model")

LAYER_COLUMNS = [
    "layer", "params_before", "params_after", "prunable_before", "prunable_removed", "pruning_rate",
    "kv_groups_before", "kv_groups_kept", "heads_before", "heads_kept", "mlp_channels_before",
    "mlp_channels_kept", "attn_pruned", "mlp_pruned", "extreme",
]

_PACKAGES = ("gradprune", "torch", "transformers", "lightning", "lm_eval", "optuna", "pydantic", "numpy")


@runtime_checkable
class RunFiles(Protocol):
    """What :func:`write_output` writes of a run: :class:`gradprune.run.RunOutput` (a later stage, so named
    here by its fields, which a test holds to RunOutput's)."""

    #: run.json's content
    record: dict
    #: layers.csv's rows (:func:`layer_rows`) and its statistic columns
    layer_rows: list[dict]
    stat_names: list[str]
    #: the plan (plan.json) and the raw scores (scores.safetensors)
    plan: Any
    scores: dict
    #: the pruned model and its tokenizer when it is saved (``output.save_model``), else None
    model: Any
    tokenizer: Any
    #: the recovery stage's result (its adapter goes into the saved model), or None
    recovery: Any


def original_settings(recipe) -> dict[str, Any]:
    """The calibration settings under the original tool's names (``taylor_seq_len`` …), for any estimator."""
    return {name: reduce(getattr, key.split("."), recipe) for name, key in ORIGINAL_SETTINGS.items()}


def layer_rows(layers, plan, layer_stats: dict[str, list[float]], threshold: float) -> list[dict]:
    """One dict per layer (the columns of layers.csv): params before/after, groups kept, pruning rate,
    whether the layer is extreme (rate > ``threshold``), then each gradient statistic of the layer.

    ``plan`` has an entry for every layer in ``layers`` (as :func:`~gradprune.pruning.planner.plan_pruning`
    makes it)."""
    from gradprune.pruning.planner import removed_params  # torch: only where a run has it loaded anyway

    by_layer = {lp.layer: lp for lp in plan.layers}
    counts = removed_params(plan, layers)
    rows = []
    for lm in layers:
        lp = by_layer[lm.index]
        kv_kept = len(lp.attn_kept) if lp.attn_kept is not None else lm.n_kv
        ch_kept = len(lp.mlp_kept) if lp.mlp_kept is not None else lm.n_channels
        before, removed = counts[lm.index]["prunable_before"], counts[lm.index]["removed"]
        other = _other_params(lm)
        row = {
            "layer": lm.index, "params_before": before + other, "params_after": before - removed + other,
            "prunable_before": before, "prunable_removed": removed, "pruning_rate": removed / before if before else 0.0,
            "kv_groups_before": lm.n_kv, "kv_groups_kept": kv_kept,
            "heads_before": lm.n_kv * lm.n_rep, "heads_kept": kv_kept * lm.n_rep,
            "mlp_channels_before": lm.n_channels, "mlp_channels_kept": ch_kept,
            "attn_pruned": kv_kept < lm.n_kv, "mlp_pruned": ch_kept < lm.n_channels,
            "extreme": False,
        }
        for name, values in layer_stats.items():
            row[name] = values[lm.index] if lm.index < len(values) else None
        rows.append(row)
    for i in extreme_layers([r["pruning_rate"] for r in rows], threshold):
        rows[i]["extreme"] = True
    return rows


def _other_params(lm) -> int:
    """Attention/MLP parameters no group removes (o_proj / down_proj biases, if any)."""
    return sum(b.numel() for b in (lm.o.bias, lm.down.bias) if b is not None)


def run_metrics(recipe, params_before: int, params_after: int, calib, rows: list[dict], ev: dict,
                timings: dict) -> dict:
    """The flat metrics of run.json (the same names as the search CSV columns)."""
    m: dict = {
        "pruning_ratio": (params_before - params_after) / params_before,
        "target_ratio": recipe.pruning.ratio,
        "params_before": params_before,
        "params_after": params_after,
        **original_settings(recipe),
        "calibration_seed": recipe.calibration.seed,
        "extreme_pruning_layers": sum(1 for r in rows if r["extreme"]),
        "max_layer_pruning_rate": max((r["pruning_rate"] for r in rows), default=0.0),
        "calibration_loss": calib.mean_loss,
        # the statistics are split-independent; the noise ones are exact only with micro-batches of one
        "calibration_micro_batch": calib.micro_batch_size,
        "grad_noise_exact": calib.micro_batch_size == 1,
        "tokens_per_s": calib.tokens_per_s,
    }
    for name, values in calib.layer_stats.items():
        m.update(ratio_summary(name, values))
    m.update(ev)
    m.update({k: round(v, 4) for k, v in timings.items()})
    return m


def versions() -> dict[str, str]:
    """Versions of the packages that shape the numbers, plus Python and the platform."""
    out = {"python": platform.python_version(), "platform": platform.platform()}
    for name in _PACKAGES:
        try:
            out[name] = metadata.version(name.replace("_", "-"))
        except metadata.PackageNotFoundError:
            try:
                out[name] = metadata.version(name)
            except metadata.PackageNotFoundError:
                out[name] = "not installed"
    return out


def clean(obj: Any) -> Any:
    """JSON-safe copy: NaN/Inf become None (strict JSON readers reject them)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [clean(v) for v in obj]
    return obj


def layers_csv_text(rows: list[dict], stat_names: list[str]) -> str:
    """CSV text of the per-layer table (fixed columns, then one column per gradient statistic)."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=LAYER_COLUMNS + stat_names, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in LAYER_COLUMNS + stat_names})
    return buf.getvalue()


def check_output_dir(path: str | Path, overwrite: bool, key: str = "output.dir") -> Path:
    """Refuse a dir that already holds a run's results (or is a file) unless ``overwrite``; creates nothing."""
    p = Path(path)
    refuse_existing(p, RESULT_FILES, overwrite, f"{key}: {str(p)!r} is a file; expected a directory for the results",
                    f"{key}: {str(p)!r} already holds results ({{existing}}); choose another output.dir=... or "
                    "pass --overwrite to replace them")
    return p


def _run_files(out: RunFiles) -> dict[str, bytes]:
    """A run's files but the plan and the model, rendered in memory (name → bytes)."""
    from safetensors.torch import save as safetensors_bytes

    flat = {f"{layer}.{kind}": s.contiguous() for (layer, kind), s in out.scores.items()}
    return {
        "scores.safetensors": safetensors_bytes(flat),
        "layers.csv": layers_csv_text(out.layer_rows, out.stat_names).encode(),
        "run.json": json_text(clean(out.record)).encode(),
    }


def model_bytes(model: Any) -> int:
    """Bytes of a model's tensors as safetensors stores them (each storage once: tied weights count once)."""
    seen: dict[tuple, int] = {}
    for t in model.state_dict().values():
        seen[(t.untyped_storage().data_ptr(), t.device.type)] = t.untyped_storage().nbytes()
    return sum(seen.values())


def write_output(out: RunFiles, out_dir: str | Path, save_model: bool) -> Path:
    """Write a run's files (``out``: a :class:`gradprune.run.RunOutput`) into ``out_dir``: the scores,
    plan.json, layers.csv, the pruned model when asked, and run.json (whose presence marks a complete run).

    Everything is written into a temp sibling folder first and moved into ``out_dir`` only when all of it
    is written, so the results already there (``--overwrite``) stay until the new ones are whole. A full
    disk or a folder that cannot be written is an :class:`~gradprune.errors.OutputError` (nothing replaced,
    the temp folder removed), raised before writing when the free space is already too small.
    """
    d = Path(out_dir)
    files = _run_files(out)
    with_model = save_model and out.model is not None
    plan_bytes = len(json.dumps(out.plan.to_dict(), indent=1, default=str))
    needed = sum(len(b) for b in files.values()) + plan_bytes + (model_bytes(out.model) if with_model else 0)
    check_space(d, needed)
    with failures_named(d, needed), staged_dir(d) as staged:
        out.plan.save(staged / "plan.json")
        for name in ("scores.safetensors", "layers.csv"):
            atomic_write_bytes(staged / name, files[name])
        if with_model:
            from gradprune.cut.checkpoint import save_pruned

            # the recovery adapter (and merged model) go into the checkpoint
            extras = out.recovery.checkpoint_extras(out.tokenizer, out.plan) if out.recovery is not None else None
            save_pruned(out.model, out.tokenizer, out.plan, staged / "model", extras=extras)
        atomic_write_bytes(staged / "run.json", files["run.json"])
        # an earlier run's pruned model would pass for this run's: model/ goes when this run saved none
        swap_in(staged, d, RESULT_FILES, last="run.json")
    return d / "run.json"


def write_output_or_show(out: RunFiles, out_dir: str | Path, save_model: bool, console: Any) -> Path:
    """:func:`write_output`; where the results cannot be written (an :class:`~gradprune.errors.OutputError`),
    the run's flat metrics are printed as one JSON line first, so the hours of evaluation behind them
    are not lost with the files."""
    from gradprune.errors import OutputError

    try:
        return write_output(out, out_dir, save_model)
    except OutputError:
        from gradprune.progress import print_plain

        print_plain(console, "the run's metrics (not written): " + json.dumps(clean(out.record["metrics"])))
        raise
