"""``search_results.csv``: one row per finished trial, built from the study, rewritten atomically.

Rows keep the original tool's columns (success, taylor_seq_len, taylor_num_samples, acc_*, ppl,
grad_*_ratio, extreme_pruning_layers, pruning_ratio) plus every grid key, the replicate seed, a
``config_id`` shared by the replicates of one grid point, per-stage timings and stability columns.
A trial stopped by successive halving has ``status = pruned``, ``evaluated = False``, ``eval_fraction``
and ``acc_mean_at_fraction`` (no ``acc_mean``); a screened trial has ``status = screened``,
``evaluated = False`` and ``acc_mean_predicted`` (see ``search/halving/``, ``search/screening.py``).
"""

from __future__ import annotations

import csv
import io
import itertools
import json
from pathlib import Path
from typing import Any

from gradprune.errors import GradpruneError
from gradprune.files import atomic_write_text, failures_named
from gradprune.original_names import ORIGINAL_SETTINGS
from gradprune.search.study import decode

# the first columns, in this order; the original tool's setting names come from the run's record
FIRST = ["trial", "config_id", "seed", "status", "success", "error", "evaluated", "duration_s",
         *ORIGINAL_SETTINGS, "acc_mean", "acc_mean_recovered", "eval_fraction", "acc_mean_at_fraction",
         "acc_mean_predicted", "screen_role", "ppl", "ppl_recovered", "grad_norm_ratio", "grad_mean_ratio",
         "grad_std_ratio", "grad_max_ratio", "extreme_pruning_layers", "pruning_ratio"]


def trial_rows(study, spec) -> list[dict[str, Any]]:
    """Rows of every trial that ended (complete, failed with a reason, pruned), in trial order."""
    from optuna.trial import TrialState

    points = [json.dumps(p, sort_keys=True) for p in spec.points()]
    rows = []
    for t in sorted(study.get_trials(deepcopy=False), key=lambda t: t.number):
        if t.state in (TrialState.WAITING, TrialState.RUNNING) or t.user_attrs.get("retried"):
            continue
        params = {k: decode(v) for k, v in t.params.items()}
        point = {k: v for k, v in params.items() if k != "calibration.seed" or "calibration.seed" in spec.grid}
        cid = points.index(json.dumps(point, sort_keys=True)) if json.dumps(point, sort_keys=True) in points else -1
        status = t.user_attrs.get("status") or ("complete" if t.state == TrialState.COMPLETE else t.state.name.lower())
        row: dict[str, Any] = {
            "trial": t.number, "config_id": cid, "seed": t.user_attrs.get("seed", params.get("calibration.seed")),
            "status": status, "success": bool(t.user_attrs.get("success", False)),
            "error": t.user_attrs.get("error", ""), "evaluated": t.user_attrs.get("evaluated", True),
            "duration_s": t.user_attrs.get("duration_s"),
        }
        row.update({k: (json.dumps(v) if isinstance(v, (list, dict)) else v) for k, v in params.items()})
        row.update(t.user_attrs.get("metrics", {}))
        row.update(t.user_attrs.get("extra", {}))
        rows.append(row)
    return rows


def add_stability(rows: list[dict[str, Any]], trials_dir: Path) -> None:
    """Per grid point with ≥ 2 successful replicates: kept-set Jaccard and score rank correlation."""
    from gradprune.search.stability import replicate_stability

    by_cfg: dict[int, list[dict]] = {}
    for r in rows:
        if r["success"]:
            by_cfg.setdefault(r["config_id"], []).append(r)
    for reps in by_cfg.values():
        if len(reps) < 2:
            continue
        stats = replicate_stability([trials_dir / f"trial_{r['trial']}" for r in reps])
        for r in reps:
            r.update(stats)


def csv_text(rows: list[dict[str, Any]]) -> str:
    """CSV with the original columns first, then the rest in first-seen order."""
    cols = [c for c in FIRST if any(c in r for r in rows)]
    rest = list(dict.fromkeys(itertools.chain.from_iterable(rows)))
    cols += [c for c in rest if c not in cols]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({c: ("" if r.get(c) is None else r.get(c)) for c in cols})
    return buf.getvalue()


def _read_existing(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    """The header and rows of an existing CSV (nothing where it is missing or unreadable)."""
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            return list(reader.fieldnames or []), list(reader)
    except (OSError, UnicodeDecodeError, csv.Error):
        return [], []


def check_added_columns(path: Path, study, spec) -> None:
    """Columns added to the CSV by hand are kept on a rewrite by joining their values on ``trial``: a CSV
    that has such columns but lost its ``trial`` column is refused, naming them (``study``: the search's
    study as stored, or None for a new one)."""
    header, _ = _read_existing(path)
    if not header or "trial" in header:
        return
    owned = {c for r in (trial_rows(study, spec) if study is not None else []) for c in r}
    added = [c for c in header if c and c not in owned and c not in FIRST]
    if added:
        raise GradpruneError(f"{path}: has no 'trial' column, so the column(s) added to it ({', '.join(added)}) could "
                             "not be kept when the search rewrites it; restore the 'trial' column, or move the file "
                             "away (the search writes a new one from its study)")


def keep_added_columns(rows: list[dict[str, Any]], path: Path) -> None:
    """Carry the values of the columns added to the existing CSV over to the rows of the same trial, so a
    rewrite from the study never drops them."""
    header, old = _read_existing(path)
    if "trial" not in header:
        return
    owned = {c for r in rows for c in r}
    added = [c for c in header if c and c not in owned and c not in FIRST]
    if not added:
        return
    by_trial = {str(r.get("trial")): r for r in old}
    for row in rows:
        previous = by_trial.get(str(row["trial"]), {})
        for c in added:
            row[c] = previous.get(c, "")


def write_results(study, spec, out_dir: Path) -> Path:
    """Rebuild and atomically rewrite ``search_results.csv`` from the study (columns added to the file by
    hand keep their values)."""
    rows = trial_rows(study, spec)
    if spec.evaluation == "screen":
        from gradprune.search.screening import screen_rows

        rows = screen_rows(study, spec, rows)
    elif spec.evaluation == "halving" and spec.halving_schedule() == "sync":
        from gradprune.search.halving import sync_rows

        rows = sync_rows(study, rows)
    add_stability(rows, out_dir / "trials")
    keep_added_columns(rows, out_dir / "search_results.csv")
    text = csv_text(rows)
    # a full disk: exit 1 naming the file; the study holds every result, a rerun after freeing space rewrites it
    with failures_named(out_dir / "search_results.csv", len(text.encode())):
        return atomic_write_text(out_dir / "search_results.csv", text)
