"""Recording a run: ``run.json`` (everything), ``layers.csv`` (one row per layer), ``plan.json``.

Every file is written atomically; ``run.json`` last, so its presence means the run is complete.
"""

from __future__ import annotations

import csv
import io
import math
import platform
from importlib import metadata
from pathlib import Path
from typing import Any

from gradprune.files import atomic_write_json, atomic_write_text

LAYER_COLUMNS = [
    "layer", "params_before", "params_after", "prunable_before", "prunable_removed", "pruning_rate",
    "kv_groups_before", "kv_groups_kept", "heads_before", "heads_kept", "mlp_channels_before",
    "mlp_channels_kept", "attn_pruned", "mlp_pruned", "extreme",
]

_PACKAGES = ("gradprune", "torch", "transformers", "lightning", "lm_eval", "optuna", "pydantic", "numpy")


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


def write_run(out_dir: str | Path, record: dict, layer_rows: list[dict], stat_names: list[str], plan) -> Path:
    """Write plan.json, layers.csv, then run.json into ``out_dir``; returns the run.json path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    plan.save(out / "plan.json")
    atomic_write_text(out / "layers.csv", layers_csv_text(layer_rows, stat_names))
    return atomic_write_json(out / "run.json", clean(record))
