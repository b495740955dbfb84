"""The memory plan as text: one recipe's lines (``gradprune plan-memory``), and the table of what fits
where for published models (README, docs/performance.md), computed by the plan itself so that it cannot
drift from the code (``benchmarks/memory_table.py`` rewrites it; a test compares)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from gradprune.errors import GradpruneError
from gradprune.memory.capacity import Capacity
from gradprune.memory.fit import Fitted, fit
from gradprune.memory.plan import gib
from gradprune.memory.shape import model_shape
from gradprune.memory.workload import workload

_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
          "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


def parse_size(text: str) -> int:
    """``80GiB``, ``80GB``, ``81559MiB``, ``8.5e10`` → bytes."""
    found = re.fullmatch(r"\s*([\d.]+(?:e\d+)?)\s*([a-zA-Z]*)\s*", text)
    unit = found.group(2).lower() if found else ""
    if found is None or unit not in _UNITS:
        raise GradpruneError(f"--device-memory {text!r}: expected a size such as 80GiB, 80GB or 81559MiB")
    return int(float(found.group(1)) * _UNITS[unit])


def plan_lines(fitted: Fitted) -> list[str]:
    """The plan stage by stage, each line's bytes, and the verdict (80 columns)."""
    plan, cap = fitted.plan, fitted.capacity
    w = plan.workload
    out = [f"model: {plan.shape.params / 1e9:.3g} B parameters ({plan.shape.prunable / 1e9:.3g} B prunable), "
           f"{plan.shape.n_layers} layers, vocabulary {plan.shape.vocab:,}",
           f"calibration: micro-batch {w.micro_batch} × {w.seq_len} tokens"
           + (", gradient checkpointing" if w.checkpointing else "")
           + (f", FSDP over {w.world}" if w.world > 1 else "")
           + (f", mean-gradient buffer on the {w.mean_gradient}" if w.mean_gradient else "")]
    if w.recovery is not None:
        r = w.recovery
        out.append(f"recovery: micro-batch {r.micro_batch} × {r.cutoff_len} tokens"
                   + (", gradient checkpointing" if r.checkpointing else "")
                   + (f", LoRA r {r.rank} on {len(r.projections)} projections" if r.rank else ""))
    for stage in plan.stages():
        limit = f" (limit {gib(plan.stage_limit(stage))})" if cap is not None else ""
        out.append(f"{stage:<14} {gib(plan.stage_peak(stage)):>10}{limit}")
        for ln in (ln for ln in plan.lines if ln.stage == stage):
            where = " [host]" if ln.where == "host" and not plan.host_is_device else ""
            out.append(f"  {ln.item[:54]:<54} {gib(ln.bytes):>10}{where}")
        if plan.budgets.get(stage) is not None:
            out.append(f"  (evaluation batches sized to {gib(plan.budgets[stage])}: half the room beside the weights)")
    if cap is None:
        out.append("device memory unknown: nothing checked")
    elif fitted.problem is not None:
        out.append(f"does not fit: {fitted.problem}")
    else:
        out.append(f"fits {cap.label} (peak {gib(plan.peak)} of {gib(cap.usable)} usable)")
    return out + [f"note: {n}" for n in fitted.notes]


# -------------------------------------------------------------------------------------- the docs table

#: the models of the table, by the config file shipped in docs/model_configs
TABLE_MODELS = {"Mistral-7B-v0.3": "mistral-7b-v0.3.json", "Llama-3-8B": "llama-3-8b.json",
                "Llama-2-70B": "llama-2-70b.json"}
#: one H100 80 GB: 79.1 GiB of device memory less ~0.6 GiB for the CUDA context (an assumption, not measured)
H100_FREE = int(78.5 * 2**30)
TABLE_START = "<!-- memory-table:start (benchmarks/memory_table.py writes this table) -->"
TABLE_END = "<!-- memory-table:end -->"


def load_config(path: str | Path) -> Any:
    """A transformers config from a config.json file (its ``_source`` note dropped)."""
    from transformers import AutoConfig

    data = json.loads(Path(path).read_text(encoding="utf-8"))
    data.pop("_source", None)
    return AutoConfig.for_model(**data)


def _peak(fitted: Fitted) -> str:
    """``41.0`` (GiB, fits), or ``**95.1** ✗`` (does not fit)."""
    peak = fitted.plan.stage_peak("calibration")
    return f"{peak / 2**30:.1f}" if fitted.problem is None else f"**{peak / 2**30:.1f}** ✗"


def docs_table(config_dir: str | Path, recipe: Any) -> str:
    """The markdown table: per model and grid corner (seq_len, num_samples), without / with gradient
    checkpointing: calibration's peak at ``batch_size: 8`` on one H100, the micro-batch ``auto`` picks there,
    the per-GPU peak under FSDP on 8 H100s, and the evaluation's peak (the dense model's, its batches sized
    to half the room beside the weights; over the 8 GPUs when FSDP's gathered model fits no one of them)."""
    rows = ["| model | seq_len | num_samples | 1 × H100, batch_size 8: peak GiB (checkpointing no / yes) | "
            "batch_size auto, 1 × H100 (no / yes) | 8 × H100, FSDP, batch_size 8: GiB per GPU (no / yes) | "
            "evaluation peak GiB |",
            "|---|---|---|---|---|---|---|"]
    notes: list[str] = []
    one = Capacity("cuda", "one H100 80 GB", H100_FREE, H100_FREE, 1)
    eight = Capacity("cuda", "8 × H100 80 GB", H100_FREE, H100_FREE, 8)
    for name, file in TABLE_MODELS.items():
        shape = model_shape(load_config(Path(config_dir) / file))
        for seq in (16, 256):
            for samples in (128, 512):
                single, auto, fsdp = [], [], []
                for ckpt in (False, True):
                    w = workload(_with(recipe, seq, samples, ckpt, 8))
                    single.append(fit(shape, w, one))
                    fsdp.append(fit(shape, workload(_with(recipe, seq, samples, ckpt, 8), world=8), eight))
                    a = fit(shape, workload(_with(recipe, seq, samples, ckpt, "auto")), one)
                    auto.append(str(a.plan.workload.micro_batch) if a.problem is None else "✗")
                # the evaluation as it runs: on one GPU, or spread over the 8 when FSDP gathers a model none holds
                where = fsdp[0] if fsdp[0].spread_eval else single[0]
                ev = max(where.plan.stage_peak(s) for s in ("dense eval", "eval")) / 2**30
                ev_cell = f"{ev:.1f}" + (" (8 GPUs)" if fsdp[0].spread_eval else "")
                rows.append(f"| {name} | {seq} | {samples} | {' / '.join(_peak(f) for f in single)} | "
                            f"{' / '.join(auto)} | {' / '.join(_peak(f) for f in fsdp)} | {ev_cell} |")
        plan = single[0].plan
        notes.append(f"{name}: weights {gib(plan.item('calibration', 'weights'))} (bf16), mean-gradient buffer "
                     f"{gib(plan.item('calibration', 'mean-gradient'))} (4 B per prunable parameter), vocabulary "
                     f"{shape.vocab:,}")
    return "\n".join(rows) + "\n\n" + "; ".join(notes) + "."


def _with(recipe: Any, seq_len: int, num_samples: int, checkpointing: bool, batch: int | str) -> Any:
    cal = recipe.calibration.model_copy(update={"seq_len": seq_len, "num_samples": num_samples,
                                                "gradient_checkpointing": checkpointing, "batch_size": batch})
    return recipe.model_copy(update={"calibration": cal})


def splice(text: str, table: str) -> str:
    """``text`` with the block between the table markers replaced by ``table``."""
    start, end = text.index(TABLE_START) + len(TABLE_START), text.index(TABLE_END)
    return text[:start] + "\n" + table + "\n" + text[end:]
