"""What was run, gathered from the trials' resolved recipes (``trials/*/run.json``), the search recipe
(``search.json``) and, where neither is beside the CSV, the CSV's own columns: the facts method.tex
states. A fact that differs between trials is listed with every value; one no source holds is None."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from gradprune.analysis.sources import Provenance


def _get(d: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(d, dict) or part not in d:
            return None
        d = d[part]
    return d


def _distinct(values: list[Any]) -> list[Any]:
    out = []
    for v in values:
        if v is not None and v not in out:
            out.append(v)
    return out


@dataclass
class Protocol:
    """The facts of a search: each value is a list of the distinct values seen (empty: unknown)."""

    from_recipes: bool
    facts: dict[str, list[Any]] = field(default_factory=dict)
    grid: dict[str, list[Any]] = field(default_factory=dict)
    replicates: int | None = None

    def one(self, key: str) -> Any:
        """The value of a fact when every trial had the same one, else None."""
        v = self.facts.get(key, [])
        return v[0] if len(v) == 1 else None


RECIPE_FACTS = {
    "model": "recipe.model.name_or_path", "revision": "recipe.model.revision", "dtype": "recipe.model.dtype",
    "calibration_dataset": "recipe.calibration.dataset", "seq_len": "recipe.calibration.seq_len",
    "num_samples": "recipe.calibration.num_samples", "batch_size": "recipe.calibration.batch_size",
    "seed": "recipe.calibration.seed", "importance": "recipe.importance", "normalizer": "recipe.normalizer",
    "collectors": "recipe.stats.collectors", "extreme_threshold": "recipe.stats.extreme_threshold",
    "ratio": "recipe.pruning.ratio", "scope": "recipe.pruning.scope",
    "attention_layers": "recipe.pruning.attention_layers", "mlp_layers": "recipe.pruning.mlp_layers",
    "tasks": "recipe.eval.tasks", "num_fewshot": "recipe.eval.num_fewshot", "limit": "recipe.eval.limit",
    "ppl_datasets": "recipe.eval.ppl_datasets", "ppl_seq_len": "recipe.eval.ppl_seq_len",
    "eval_run": "recipe.eval.run", "precision": "recipe.trainer.precision",
    "lm_eval": "versions.lm_eval", "transformers": "versions.transformers", "torch": "versions.torch",
    "lightning": "versions.lightning", "gradprune": "versions.gradprune",
    "n_layers": "model.n_layers", "params_before": "model.params_before",
}
# the CSV's columns that carry a fact when no recipe is there
CSV_FACTS = {"seq_len": ("taylor_seq_len", "calibration.seq_len"),
             "num_samples": ("taylor_num_samples", "calibration.num_samples"),
             "seed": ("seed", "calibration_seed", "calibration.seed"),
             "ratio": ("target_ratio", "pruning.ratio"), "model": ("model", "model.name_or_path"),
             "params_before": ("params_before",)}


def _ppl_sources(runs: list[dict[str, Any]]) -> list[str]:
    out = []
    for r in runs:
        for name, d in (_get(r, "eval.ppl.datasets") or {}).items():
            text = f"{name} ({d.get('source')})" if isinstance(d, dict) and d.get("source") else name
            if text not in out:
                out.append(text)
    return out


def read_protocol(provenance: list[Provenance], rows: pd.DataFrame) -> Protocol:
    """The protocol of the analysed rows (recipes first, then the CSV's columns)."""
    runs = [r for p in provenance for r in p.runs]
    proto = Protocol(from_recipes=bool(runs))
    for key, path in RECIPE_FACTS.items():
        proto.facts[key] = _distinct([_get(r, path) for r in runs])
    proto.facts["ppl_sources"] = _ppl_sources(runs)
    proto.facts["task_n"] = _distinct([_get(r, "eval.zeroshot.n") for r in runs])
    for key, columns in CSV_FACTS.items():
        if proto.facts.get(key):
            continue
        col = next((c for c in columns if c in rows.columns), None)
        if col is not None:
            values = rows[col].dropna()
            proto.facts[key] = sorted(values.unique().tolist(), key=lambda v: (isinstance(v, str), str(v) if
                                                                            isinstance(v, str) else v))
    for p in provenance:
        spec = (p.search or {}).get("spec") or {}
        for k, v in (spec.get("grid") or {}).items():
            proto.grid.setdefault(k, [])
            proto.grid[k] += [x for x in v if x not in proto.grid[k]]
        if spec.get("replicates"):
            proto.replicates = int(spec["replicates"])
    return proto
