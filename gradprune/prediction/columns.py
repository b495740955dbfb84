"""Which columns of a search CSV are candidate features, which are parts of the target, and which are
bookkeeping; non-numeric, constant and duplicate columns are set aside and listed, never dropped silently.

A feature has a role: a calibration setting (what the researcher chose), a gradient statistic (measured
during calibration, before any evaluation), or a post-pruning proxy (``proxy_*``: cheap, after pruning).
Evaluation outputs (perplexities, accuracies, dense-model numbers) are measured after the expensive
evaluation the predictors are meant to replace, so they are never features.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from gradprune.errors import GradpruneError
from gradprune.record import ORIGINAL_SETTINGS

# identifiers and bookkeeping: numbers, but not properties of a calibration setting
_BOOKKEEPING = {"trial", "trial_id", "number", "config_id", "seed", "success", "error", "status",
                "evaluated", "state", "duration", "calibration_reused", "replicates_n", "tokens_per_s"}
_FAMILIES = ("acc", "ppl")
NEAR_DUPLICATE = 0.999  # |Spearman| at or above which two features are the same ordering, counted once
MIN_ROWS = 4  # rows a predictor fit needs at least (and so does an analysis)
MIN_COVERAGE = 0.9  # a feature missing in more rows than this is not offered to the predictors
MIN_NUMERIC_SHARE = 0.5  # a column with at least this share of numbers is numeric; other cells are missing

SETTING, STATISTIC, PROXY, RATIO = "settings", "statistics", "proxies", "ratio"
ROLE_TITLES = {SETTING: "calibration settings", STATISTIC: "gradient statistics", PROXY: "post-pruning proxies",
               RATIO: "pruning ratio and parameter counts"}
# calibration settings a run records as plain metric names (the original tool's and the seed)
_SETTINGS = {*ORIGINAL_SETTINGS, "calibration_seed"}
# how much was pruned: a consequence of the setting (and the model's size), never a gradient statistic; a
# baseline the statistics must beat where it varies
RATIO_COLUMNS = ("pruning_ratio", "target_ratio", "pruning.ratio", "params_after", "params_before")


def feature_role(name: str) -> str:
    """``ratio`` for the pruning ratio and parameter counts (RATIO_COLUMNS), ``settings`` for recipe keys
    (dotted grid keys, the original tool's ``taylor_seq_len`` …), ``proxies`` for ``proxy_*``, otherwise
    ``statistics`` (grad_*_ratio, extreme_pruning_layers, other pre-evaluation quantities)."""
    if name in RATIO_COLUMNS:
        return RATIO
    if name.startswith("proxy_"):
        return PROXY
    if name in _SETTINGS or "." in name:
        return SETTING
    return STATISTIC


def is_evaluation_output(name: str) -> bool:
    """True for what the evaluation measures (``ppl*``, ``acc*``, ``dense_*``, ``*_stderr``)."""
    return (any(name == fam or name.startswith(fam + "_") for fam in _FAMILIES)
            or name.startswith("dense_") or name.endswith("_stderr"))


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


def _as_numbers(col: pd.Series) -> tuple[pd.Series | None, list[int]]:
    """The column as floats and the positions of cells that are not numbers (missing from then on);
    None when fewer than MIN_NUMERIC_SHARE of the non-missing cells are numbers (a text column)."""
    if pd.api.types.is_bool_dtype(col) or pd.api.types.is_numeric_dtype(col):
        return col.astype(float), []
    values = pd.to_numeric(col, errors="coerce")
    given = int(col.notna().sum())
    if given == 0 or values.notna().sum() < MIN_NUMERIC_SHARE * given:
        return None, []
    return values.astype(float), [int(i) for i in np.flatnonzero((values.isna() & col.notna()).to_numpy())]


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
    evaluation: list[str] = field(default_factory=list)  # evaluation outputs: never features
    near_duplicates: dict[str, tuple[str, float]] = field(default_factory=dict)  # member -> (kept, Spearman)
    bad_cells: list[tuple[int, str, str]] = field(default_factory=list)  # (row position, column, text)

    def role(self, feature: str) -> str:
        """The role of a feature (see :func:`feature_role`)."""
        return feature_role(feature)

    def by_role(self) -> dict[str, list[str]]:
        """Features per role, in feature order (roles without features left out)."""
        out: dict[str, list[str]] = {}
        for f in self.features:
            out.setdefault(feature_role(f), []).append(f)
        return {r: out[r] for r in ROLE_TITLES if r in out}


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


def _near_duplicates(numeric: dict[str, pd.Series], features: list[str]) -> dict[str, tuple[str, float]]:
    """Features whose |Spearman| with an earlier kept feature is ≥ NEAR_DUPLICATE: member → (kept, ρ).

    Such columns order the rows the same way (grad_std_ratio and grad_norm_ratio when the mean gradient
    is ≈ 0 and the layers are equally large): one feature, tested once.
    """
    if len(features) < 2:
        return {}
    frame = pd.DataFrame({f: numeric[f] for f in features})
    rho = frame.corr(method="spearman", min_periods=3)
    order = sorted(features, key=lambda c: ("." in c, features.index(c)))
    kept: list[str] = []
    out: dict[str, tuple[str, float]] = {}
    for name in order:
        twin = next((k for k in kept if np.isfinite(rho.loc[k, name]) and abs(rho.loc[k, name]) >= NEAR_DUPLICATE),
                    None)
        if twin is None:
            kept.append(name)
        else:
            out[name] = (twin, float(rho.loc[twin, name]))
    return out


def assign_roles(rows: pd.DataFrame, target: str, source: str) -> ColumnRoles:
    """Sort the columns of ``rows`` into roles; raise when no feature varies or the target is constant."""
    buckets: dict[str, list[str]] = {"constant": [], "non_numeric": [], "target_parts": [], "bookkeeping": [],
                                     "evaluation": []}
    varying: dict[str, pd.Series] = {}
    bad_cells: list[tuple[int, str, str]] = []
    for name in map(str, rows.columns):
        if name == target:
            continue
        if is_bookkeeping(name):
            buckets["bookkeeping"].append(name)
        elif is_target_part(name, target):
            buckets["target_parts"].append(name)
        elif is_evaluation_output(name):
            buckets["evaluation"].append(name)
        elif (parsed := _as_numbers(rows[name]))[0] is None:
            buckets["non_numeric"].append(name)
        elif (values := parsed[0]).nunique(dropna=True) < 2:
            buckets["constant"].append(name)
        else:
            varying[name] = values
            bad_cells += [(i, name, str(rows[name].iloc[i])) for i in parsed[1]]
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
    near = _near_duplicates(varying, features)
    features = [f for f in features if f not in near]
    data = pd.DataFrame({target: y, **{f: varying[f] for f in features}})
    return ColumnRoles(target, features, data, duplicates=duplicates, near_duplicates=near, bad_cells=bad_cells,
                       **buckets)


def model_inputs(roles: ColumnRoles, source: str) -> tuple[pd.DataFrame, np.ndarray, np.ndarray, list[str]]:
    """Features and rows offered to the predictors: features with few gaps, rows without gaps in them."""
    data = roles.data
    coverage = data[roles.features].notna().mean()
    usable = [f for f in roles.features if coverage[f] >= MIN_COVERAGE]
    notes = [f"{f} is missing in {1 - coverage[f]:.0%} of the rows and is not offered to the predictors"
             for f in roles.features if f not in usable]
    if not usable:
        raise GradpruneError(f"{source}: every varying feature is missing in more than "
                             f"{1 - MIN_COVERAGE:.0%} of the rows: no predictor can be fitted")
    mask = data[usable].notna().all(axis=1).to_numpy()
    if mask.sum() < MIN_ROWS:
        raise GradpruneError(f"{source}: only {mask.sum()} rows have every feature: the predictors need {MIN_ROWS}")
    if not mask.all():
        notes.append(f"{(~mask).sum()} row(s) with a missing feature value are left out of the predictor fitting")
    return data.loc[mask, usable].reset_index(drop=True), data.loc[mask, roles.target].to_numpy(float), mask, notes
