"""Which columns of a search CSV are candidate features, which are parts of the target, and which are
bookkeeping; non-numeric, constant and duplicate columns are set aside and listed, never dropped silently.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from gradprune.errors import GradpruneError

# identifiers and bookkeeping: numbers, but not properties of a calibration setting
_BOOKKEEPING = {"trial", "trial_id", "number", "config_id", "seed", "success", "error", "status",
                "evaluated", "state", "duration", "calibration_reused", "replicates_n", "tokens_per_s"}
_FAMILIES = ("acc", "ppl")


def is_bookkeeping(name: str) -> bool:
    """True for identifiers, seeds, flags and timings (``time_*`` …): never features."""
    last = name.rsplit(".", 1)[-1]
    return (name in _BOOKKEEPING or last == "seed" or name.endswith("_seed") or name.startswith(("time_", "datetime_", "Unnamed:"))
            or name.endswith(("_time", "_seconds", "_duration", "_s"))
            # which layer held a statistic's extreme is an index, not a magnitude
            or name.endswith(("_max_layer", "_min_layer")))


def target_family(target: str) -> str | None:
    """``acc`` for accuracy targets, ``ppl`` for perplexity targets, None for anything else."""
    for fam in _FAMILIES:
        if target == fam or target.startswith(fam + "_"):
            return fam
    return None


def is_target_part(name: str, target: str) -> bool:
    """True when ``name`` measures (part of) the same thing as the target, so cannot predict it.

    For an accuracy target every ``acc*`` column (per-task acc, acc_norm, acc_drop), stderr and
    ``dense_*`` column is excluded; likewise ``ppl*`` columns for a perplexity target.
    """
    if name in (target, f"{target}_stderr"):
        return True
    fam = target_family(target)
    if fam is None:
        return False
    return name == fam or name.startswith((fam + "_", "dense_")) or name.endswith("_stderr")


def _as_numbers(col: pd.Series) -> pd.Series | None:
    """The column as floats, or None when some non-missing value is not a number."""
    if pd.api.types.is_bool_dtype(col) or pd.api.types.is_numeric_dtype(col):
        return col.astype(float)
    values = pd.to_numeric(col, errors="coerce")
    if values.notna().sum() != col.notna().sum():
        return None
    return values.astype(float)


@dataclass(frozen=True)
class ColumnRoles:
    """The role of every column, and the numeric data of the target and the features."""

    target: str
    features: list[str]
    data: pd.DataFrame  # float columns: target first, then the features
    constant: list[str] = field(default_factory=list)
    non_numeric: list[str] = field(default_factory=list)
    target_parts: list[str] = field(default_factory=list)
    bookkeeping: list[str] = field(default_factory=list)
    duplicates: dict[str, str] = field(default_factory=dict)  # dropped column -> identical kept column


def _drop_duplicates(numeric: dict[str, pd.Series]) -> tuple[list[str], dict[str, str]]:
    # the original tool's plain names (taylor_seq_len) win over dotted grid keys (calibration.seq_len)
    order = sorted(numeric, key=lambda c: ("." in c, list(numeric).index(c)))
    kept: list[str] = []
    dropped: dict[str, str] = {}
    for name in order:
        twin = next((k for k in kept if numeric[k].equals(numeric[name])), None)
        if twin is None:
            kept.append(name)
        else:
            dropped[name] = twin
    return [c for c in numeric if c in kept], dropped


def assign_roles(rows: pd.DataFrame, target: str, source: str) -> ColumnRoles:
    """Sort the columns of ``rows`` into roles; raise when no feature varies or the target is constant."""
    buckets: dict[str, list[str]] = {"constant": [], "non_numeric": [], "target_parts": [], "bookkeeping": []}
    varying: dict[str, pd.Series] = {}
    for name in map(str, rows.columns):
        if name == target:
            continue
        if is_bookkeeping(name):
            buckets["bookkeeping"].append(name)
        elif is_target_part(name, target):
            buckets["target_parts"].append(name)
        elif (values := _as_numbers(rows[name])) is None:
            buckets["non_numeric"].append(name)
        elif values.nunique(dropna=True) < 2:
            buckets["constant"].append(name)
        else:
            varying[name] = values
    y = rows[target].astype(float)
    if y.nunique() < 2:
        raise GradpruneError(f"{source}: target {target!r} has the same value in every used row: nothing to explain")
    if not varying:
        shown = ", ".join(buckets["constant"][:20]) or "(no numeric candidate columns)"
        raise GradpruneError(
            f"{source}: every candidate feature is constant or empty over the {len(rows)} used rows, so nothing "
            f"can explain {target!r}; expected columns that vary between trials. Constant: {shown}"
        )
    features, duplicates = _drop_duplicates(varying)
    data = pd.DataFrame({target: y, **{f: varying[f] for f in features}})
    return ColumnRoles(target, features, data, duplicates=duplicates, **buckets)
