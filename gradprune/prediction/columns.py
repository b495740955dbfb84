"""Which columns of a search CSV are candidate features, which are parts of the target, and which are
bookkeeping; non-numeric, constant and duplicate columns are set aside and listed, never dropped silently.

A feature has a role: a calibration setting (what the researcher chose), a gradient statistic (measured
during calibration, before any evaluation), or a post-pruning proxy (``proxy_*``: cheap, after pruning).
Evaluation outputs (perplexities, accuracies, dense-model numbers) are measured after the expensive
evaluation the predictors are meant to replace, so they are never features.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from gradprune.errors import GradpruneError
from gradprune.original_names import ORIGINAL_SETTINGS

# identifiers and bookkeeping: numbers, but not properties of a calibration setting
_BOOKKEEPING = {"trial", "trial_id", "number", "config_id", "seed", "success", "error", "status",
                "evaluated", "state", "duration", "calibration_reused", "replicates_n", "tokens_per_s", "attempts"}
# what a run or a search records under names of its own, besides the settings, the proxies (proxy_*) and
# every collector's cross-layer <stat>_ratio: the statistics known to be measured before the evaluation.
# Any other numeric column (a note, an id added by hand) is not used unless asked for by name.
KNOWN_STATISTICS = {"pruning_ratio", "target_ratio", "extreme_pruning_layers", "max_layer_pruning_rate",
                    "calibration_loss", "calibration_micro_batch", "grad_noise_exact", "params_before",
                    "params_after", "kept_jaccard_mean", "removed_jaccard_mean", "score_rank_corr_mean",
                    "eval_fraction"}
INCLUDE_ALL = "all"  # ``--include all``: every numeric column of unknown meaning is used as a statistic
_FAMILIES = ("acc", "ppl")
NEAR_DUPLICATE = 0.999  # |Spearman| at or above which two features are the same ordering, counted once
# rows two features must both have before they can be called one: on fewer, unrelated columns order the
# rows alike by chance (2/k! for k rows: 1 in 360 on 6 rows, 1 in 20,160 on 8)
NEAR_DUPLICATE_MIN_ROWS = 8
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


def is_known_feature(name: str) -> bool:
    """True for the features gradprune itself records: settings (recipe keys, the original tool's names),
    proxies, collectors' ``<stat>_ratio`` and :data:`KNOWN_STATISTICS`."""
    return (name.startswith("proxy_") or name in _SETTINGS or "." in name or name.endswith("_ratio")
            or name in KNOWN_STATISTICS)


def is_evaluation_output(name: str) -> bool:
    """True for what the evaluation measures (``ppl*``, ``acc*``, ``dense_*``, ``*_stderr``) and for what
    recovery training measured after pruning (``recovery_*``, ``*_recovered``)."""
    return (any(name == fam or name.startswith(fam + "_") for fam in _FAMILIES)
            or name.startswith(("dense_", "recovery_")) or name.endswith(("_stderr", "_recovered")))


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
    unknown: list[str] = field(default_factory=list)  # numeric columns of unknown meaning, not used
    near_duplicate_rows: dict[str, int] = field(default_factory=dict)  # member -> rows both it and kept have
    # pairs that order their few common rows alike but were not merged: (a, b, rows in common)
    too_few_to_merge: list[tuple[str, str, int]] = field(default_factory=list)

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


def _near_duplicates(numeric: dict[str, pd.Series], features: list[str]
                     ) -> tuple[dict[str, tuple[str, float]], dict[str, int], list[tuple[str, str, int]]]:
    """Features whose |Spearman| with an earlier kept feature is ≥ NEAR_DUPLICATE on the rows both have,
    at least NEAR_DUPLICATE_MIN_ROWS of them: member → (kept, ρ); the rows each merge rests on; and the
    pairs that order their common rows alike but share too few to be merged.

    Such columns order the rows the same way (grad_std_ratio and grad_norm_ratio when the mean gradient
    is ≈ 0 and the layers are equally large): one feature, tested once. The group is represented by
    the original tool's plain name, then the member with the most values (a column with gaps must not
    stand for complete ones, or the group would go with it when gaps keep it from the predictors).
    """
    if len(features) < 2:
        return {}, {}, []
    frame = pd.DataFrame({f: numeric[f] for f in features})
    rho = frame.corr(method="spearman", min_periods=3)  # pairwise-complete rows
    present = frame.notna().astype(int)
    both = present.T @ present  # rows each pair has in common
    order = sorted(features, key=lambda c: ("." in c, -int(present[c].sum()), features.index(c)))
    kept: list[str] = []
    out: dict[str, tuple[str, float]] = {}
    rows: dict[str, int] = {}
    too_few: list[tuple[str, str, int]] = []
    for name in order:
        alike = [k for k in kept if np.isfinite(rho.loc[k, name]) and abs(rho.loc[k, name]) >= NEAR_DUPLICATE]
        twin = next((k for k in alike if both.loc[k, name] >= NEAR_DUPLICATE_MIN_ROWS), None)
        if twin is None:
            kept.append(name)
            too_few += [(k, name, int(both.loc[k, name])) for k in alike]
        else:
            out[name] = (twin, float(rho.loc[twin, name]))
            rows[name] = int(both.loc[twin, name])
    return out, rows, too_few


def assign_roles(rows: pd.DataFrame, target: str, source: str, include: Sequence[str] = ()) -> ColumnRoles:
    """Sort the columns of ``rows`` into roles; raise when no feature varies or the target is constant.

    A numeric column gradprune does not record (:func:`is_known_feature`) is listed as ``unknown`` and not
    used, unless named in ``include`` (or ``include`` holds :data:`INCLUDE_ALL`): then it is a statistic.
    """
    buckets: dict[str, list[str]] = {"constant": [], "non_numeric": [], "target_parts": [], "bookkeeping": [],
                                     "evaluation": [], "unknown": []}
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
        elif not (is_known_feature(name) or name in include or INCLUDE_ALL in include):
            buckets["unknown"].append(name)
        else:
            varying[name] = values
            bad_cells += [(i, name, str(rows[name].iloc[i])) for i in parsed[1]]
    y = rows[target].astype(float)
    if y.nunique() < 2:
        raise GradpruneError(f"{source}: target {target!r} has the same value in every used row: nothing to explain")
    if not varying and buckets["unknown"]:
        unknown = ", ".join(buckets["unknown"][:10])
        raise GradpruneError(
            f"{source}: no feature gradprune records varies over the {len(rows)} used rows; the columns that vary "
            f"are of unknown meaning ({unknown}). Pass --include NAME (or --include all) to use them as statistics")
    if not varying:
        shown = ", ".join(buckets["constant"][:20]) or "(no numeric candidate columns)"
        raise GradpruneError(
            f"{source}: every candidate feature is constant or empty over the {len(rows)} used rows, so nothing "
            f"can explain {target!r}; expected columns that vary between trials. Constant: {shown}"
        )
    features, duplicates = _drop_duplicates(varying)
    near, near_rows, too_few = _near_duplicates(varying, features)
    features = [f for f in features if f not in near]
    data = pd.DataFrame({target: y, **{f: varying[f] for f in features}})
    return ColumnRoles(target, features, data, duplicates=duplicates, near_duplicates=near, bad_cells=bad_cells,
                       near_duplicate_rows=near_rows, too_few_to_merge=too_few, **buckets)


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
