"""``analysis.json``: every number of an analysis in one JSON document (what the paper's macros quote,
with their paths into this document), plus the per-setting and per-task tables the paper prints."""

from __future__ import annotations

import math
import re
from typing import Any

import numpy as np
import pandas as pd

from gradprune.analysis.correlations import Correlation
from gradprune.analysis.pipeline import EXPORTED, Analysis
from gradprune.prediction.columns import SETTING, target_family
from gradprune.prediction.selection import RoleScore

FORMAT = "gradprune.analysis"
_TASK = re.compile(r"^(acc_norm|acc)_(?P<task>.+)$")
_NOT_TASKS = {"mean", "drop", "ratio"}  # acc_mean, acc_drop, … are summaries, not tasks


def _num(v: Any) -> float | int | None:
    if v is None:
        return None
    if isinstance(v, (bool, np.bool_)):
        return int(v)
    if isinstance(v, (int, np.integer)):
        return int(v)
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def correlation_entry(c: Correlation) -> dict[str, Any]:
    """One correlation's numbers (None where undefined)."""
    return {"n": c.n, "spearman": _num(c.spearman), "spearman_ci_low": _num(c.spearman_ci[0]),
            "spearman_ci_high": _num(c.spearman_ci[1]), "spearman_p": _num(c.spearman_p),
            "spearman_p_bh": _num(c.spearman_p_adj), "pearson": _num(c.pearson), "pearson_p_bh": _num(c.pearson_p_adj),
            "significant": c.significant, "note": c.undefined}


def role_entry(rs: RoleScore) -> dict[str, Any]:
    """A feature role's judged choice."""
    return {"r2_cv_nested": _num(rs.r2_cv_nested), "permutation_p": _num(rs.p_value), "permutations": rs.permutations,
            "best": rs.best.label, "r2_cv": _num(rs.best.r2_cv), "features": list(rs.best.fit.features)}


def setting_columns(a: Analysis) -> list[str]:
    """The calibration settings that vary (the columns a setting is made of)."""
    return [f for f in a.roles.by_role().get(SETTING, []) if f in a.roles.data]


def _t_interval(values: np.ndarray) -> tuple[float | None, float | None]:
    from scipy import stats

    n = len(values)
    if n < 2:
        return None, None
    sd = float(np.std(values, ddof=1))
    if sd == 0:
        return float(values.mean()), float(values.mean())
    lo, hi = stats.t.interval(0.95, n - 1, loc=float(values.mean()), scale=sd / math.sqrt(n))
    return float(lo), float(hi)


def settings_table(a: Analysis) -> list[dict[str, Any]]:
    """Per setting (and level of the grouping): n, mean, sd and the 95 % t-interval of the mean target over
    its seeds, ranked by the mean within each level; ``best``: first by the mean over seeds in its level."""
    data = a.roles.data
    keys = setting_columns(a)
    level = a.within.grouping.labels if a.within is not None else pd.Series("all", index=data.index)
    frame = data[[a.target, *keys]].assign(_level=level.fillna("–"))
    higher = target_family(a.target) != "ppl"
    out = []
    by = ["_level", *keys]
    for values, part in frame.groupby(by, sort=False, dropna=False):
        y = part[a.target].to_numpy(float)
        lo, hi = _t_interval(y)
        entry = {"level": values[0], "settings": {k: _num(v) for k, v in zip(keys, values[1:], strict=True)},
                 "n": int(len(y)), "mean": float(y.mean()), "sd": _num(np.std(y, ddof=1)) if len(y) > 1 else None,
                 "ci_low": lo, "ci_high": hi}
        out.append(entry)
    out.sort(key=lambda e: (str(e["level"]), -e["mean"] if higher else e["mean"]))
    seen: set = set()
    for e in out:
        e["best"] = e["level"] not in seen
        seen.add(e["level"])
    return out


def task_table(a: Analysis) -> list[dict[str, Any]]:
    """Per task and metric (acc, acc_norm): the dense model's value and the pruned models' means (all rows,
    the best setting's rows, and each level's rows)."""
    rows = a.loaded.rows
    settings = settings_table(a)
    best = next((e for e in settings if e["best"]), None)
    keys = setting_columns(a)
    in_best = pd.Series(True, index=rows.index)
    if best is not None:
        for k, v in best["settings"].items():
            in_best &= pd.to_numeric(rows[k], errors="coerce") == v
    levels = a.within.grouping.labels if a.within is not None else None
    out = []
    for col in rows.columns:
        m = _TASK.match(str(col))
        if m is None or col.endswith("_stderr") or m["task"] in _NOT_TASKS or m["task"].startswith("mean") \
                or "_at_" in col or col.endswith("_predicted"):
            continue
        values = pd.to_numeric(rows[col], errors="coerce")
        if values.notna().sum() == 0:
            continue
        dense = pd.to_numeric(rows.get(f"dense_{col}"), errors="coerce") if f"dense_{col}" in rows else None
        entry = {"task": m["task"], "metric": m.group(1), "column": str(col),
                 "dense": _num(dense.mean()) if dense is not None else None,
                 "pruned_mean": _num(values.mean()), "n": int(values.notna().sum()),
                 "pruned_best": _num(values[in_best].mean()) if keys and best is not None else None}
        if levels is not None:
            entry["levels"] = {lv: _num(values[levels == lv].mean()) for lv in a.within.grouping.levels}
        out.append(entry)
    return out


def analysis_json(a: Analysis) -> dict[str, Any]:
    """The analysis as one JSON-able document."""
    overall = a.replicates.between if a.replicates is not None else a.target_corrs
    exported = a.role_scores[EXPORTED]
    doc: dict[str, Any] = {
        "format": FORMAT, "format_version": 1, "target": a.target, "sources": [str(s) for s in a.sources],
        "rows_total": a.loaded.total, "rows_used": a.n, "seed": a.seed,
        "configs": a.replicates.target.groups if a.replicates is not None else None,
        "correlations_scope": "per-config means" if a.replicates is not None else "rows",
        "correlations": {c.x: correlation_entry(c) for c in overall},
        "roles": {name: role_entry(rs) for name, rs in a.role_scores.items() if name != EXPORTED},
        "exported": {**role_entry(exported), "formula": a.model.formula, "cv": a.comparison.scheme.name,
                     "candidates": len(a.comparison.scores)},
        "settings": settings_table(a), "tasks": task_table(a),
        "best_vs_runner_up_p": _num(a.best_settings.p) if a.best_settings is not None else None,
        "icc": _num(a.replicates.target.icc) if a.replicates is not None else None,
        "within": None, "lomo": None,
    }
    if a.within is not None:
        w = a.within
        doc["within"] = {
            "by": w.grouping.by, "column": w.grouping.column, "automatic": w.grouping.automatic,
            "levels": {lv.label: {"n": lv.n, "units": lv.units,
                                  "correlations": {c.x: correlation_entry(c) for c in lv.corrs},
                                  "roles": {n: role_entry(rs) for n, rs in (lv.roles or {}).items()}}
                       for lv in w.levels},
            "pooled": {c.x: correlation_entry(c) for c in w.pooled},
            "pooled_roles": {n: role_entry(rs) for n, rs in (w.pooled_roles or {}).items()},
            "verdicts": dict(w.verdicts),
        }
    if a.lomo is not None:
        doc["lomo"] = {"predictor": a.lomo.predictor, "r2": _num(a.lomo.r2), "baseline_r2": _num(a.lomo.baseline_r2),
                       "per_model": {k: {"n": n, "r2": _num(r)} for k, (n, r) in a.lomo.per_model.items()}}
    return doc
