"""One analysis, computed in memory: rows → column roles → correlations → replicates → predictors.

Nothing here writes files; :mod:`gradprune.analysis.command` writes the outputs only after all of
this succeeded.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import pandas as pd

from gradprune.analysis.correlations import (
    Correlation,
    all_pairs,
    by_strength,
    correlate,
    correlate_families,
    target_pairs,
)
from gradprune.analysis.feature_sets import feature_sets
from gradprune.analysis.loading import SearchRows, load_search_rows
from gradprune.analysis.recovered import TargetScores, UntunedVsRecovered, compare_untuned_recovered
from gradprune.analysis.replicates import (
    BestSettings,
    ReplicateAnalysis,
    analyze_replicates,
    best_settings,
    config_labels,
    has_replicates,
)
from gradprune.analysis.sources import Provenance
from gradprune.analysis.within import LeaveOneModelOut, WithinAnalysis, analyze_within, leave_one_model_out
from gradprune.prediction.columns import (
    NEAR_DUPLICATE_MIN_ROWS,
    ColumnRoles,
    assign_roles,
    model_inputs,
    target_family,
)
from gradprune.prediction.model import PredictionModel, build_model
from gradprune.prediction.selection import Comparison, FeatureSet, RoleScore, compare_predictors, judge_roles

HEATMAP_MAX = 15  # features shown in the heatmap (strongest |ρ| with the target): beyond that, unreadable
EXPORTED = "exported"  # the role entry of the exported model's choice: settings and statistics


@dataclass(frozen=True)
class Analysis:
    """Everything one analysis computed, handed to the report, the figures and the JSON model."""

    source: Path
    target: str
    seed: int
    loaded: SearchRows
    roles: ColumnRoles
    target_corrs: list[Correlation]  # every candidate feature (constant ones undefined), strongest first
    heatmap_columns: list[str]  # target first
    pair_corrs: list[Correlation]
    comparison: Comparison  # the exported model's candidates (settings and gradient statistics)
    model: PredictionModel
    role_scores: dict[str, RoleScore]  # EXPORTED and one entry per feature set, nested CV R² and permutation p
    role_feature_sets: list[FeatureSet]
    groups: pd.Series | None  # config of each used row, when the CSV has replicates
    replicates: ReplicateAnalysis | None
    notes: list[str] = field(default_factory=list)
    best_settings: BestSettings | None = None  # with replicates: configs ranked by their mean target
    within: WithinAnalysis | None = None  # split by a grouping (--by, or several pruning ratios)
    lomo: LeaveOneModelOut | None = None  # with rows of two or more models
    provenance: list[Provenance] = field(default_factory=list)  # one per CSV
    #: when the CSV holds the target untuned and recovered (acc_mean, acc_mean_recovered): both analysed
    recovery: UntunedVsRecovered | None = None

    @property
    def sources(self) -> list[Path]:
        """The CSVs analysed."""
        return [p.csv for p in self.provenance] or [self.source]

    @property
    def n(self) -> int:
        """Rows used."""
        return len(self.roles.data)


def _constant_entries(rows: pd.DataFrame, names: list[str], target: str) -> list[Correlation]:
    out = []
    for name in names:
        n = int(pd.to_numeric(rows[name], errors="coerce").notna().sum())
        out.append(Correlation(name, target, n, undefined="undefined (constant)"))  # all-NaN included
    return out


def _heatmap_features(data: pd.DataFrame, target: str, features: list[str]) -> list[str]:
    y = data[target].to_numpy(float)
    quick = [correlate(f, target, data[f].to_numpy(float), y) for f in features]
    return [c.x for c in by_strength(quick) if c.defined][:HEATMAP_MAX]


def _cell_notes(loaded: SearchRows, roles: ColumnRoles) -> list[str]:
    by_column: dict[str, list[tuple[int, str]]] = {}
    for pos, col, text in roles.bad_cells:
        by_column.setdefault(col, []).append((loaded.row_numbers[pos] if loaded.row_numbers else pos + 1, text))
    return [f"{col} is not a number in " + ", ".join(f"row {r} ({t!r})" for r, t in cells[:8])
            + ": those cells are treated as missing, the rest of the column is used" for col, cells in by_column.items()]


def _near_duplicate_notes(roles: ColumnRoles) -> list[str]:
    groups: dict[str, list[str]] = {}
    for member, (kept, _) in roles.near_duplicates.items():
        groups.setdefault(kept, []).append(member)
    notes = [f"{' and '.join([kept, *members])} order the rows the same way (|Spearman| ≥ 0.999 on the "
             f"{min(roles.near_duplicate_rows.get(m, 0) for m in members)} or more rows they share): one feature, "
             f"reported as {kept} and counted once in the BH correction" for kept, members in groups.items()]
    notes += [f"{a} and {b} order their {n} common rows the same way, too few (< {NEAR_DUPLICATE_MIN_ROWS}) to "
              f"call them one feature: both are kept" for a, b, n in roles.too_few_to_merge]
    return notes


def _unknown_notes(roles: ColumnRoles) -> list[str]:
    if not roles.unknown:
        return []
    names = ", ".join(roles.unknown)
    return [f"numeric column(s) of unknown meaning ignored: {names} (gradprune does not record them; "
            f"--include {roles.unknown[0]} uses one as a gradient statistic, --include all every such column)"]


def _load(csvs: Sequence[str | Path], target: str) -> tuple[SearchRows, list[Provenance]]:
    from gradprune.analysis.sources import combine, read_provenance

    loaded = [load_search_rows(c, target) for c in csvs]
    provenance = [read_provenance(r.path) for r in loaded]
    return combine(loaded, provenance), provenance


def run_analysis(csv: str | Path | Sequence[str | Path], target: str, seed: int, by: str | None = None,
                 include: Sequence[str] = ()) -> Analysis:
    """Compute the whole analysis of one or more search CSVs; raises GradpruneError for unusable input.

    ``by``: the grouping (``pruning_ratio``, ``model``, a column, or ``none``); None splits by the pruning
    ratio where the rows hold several (:mod:`gradprune.analysis.levels`). ``include``: numeric columns of
    unknown meaning to use as statistics (see :func:`assign_roles`)."""
    from gradprune.analysis.levels import resolve_grouping

    csvs = [csv] if isinstance(csv, (str, Path)) else list(csv)
    loaded, provenance = _load(csvs, target)
    source = ", ".join(str(c) for c in csvs)
    grouping = resolve_grouping(loaded.rows, by, source)  # a bad --by is refused before the work
    roles = assign_roles(loaded.rows, target, source, include)
    data = roles.data
    heat_features = _heatmap_features(data, target, roles.features)
    fams = correlate_families(data, {"target": target_pairs(target, roles.features),
                                     "pairs": all_pairs([*heat_features, target])}, seed)
    target_corrs = by_strength(fams["target"]) + _constant_entries(loaded.rows, roles.constant, target)
    groups = replicates = ranked = None
    if has_replicates(loaded.rows):
        groups = config_labels(loaded.rows)
        replicates = analyze_replicates(data, groups, target, seed)
        settings = [v.column for v in replicates.features if v.msw == 0]
        ranked = best_settings(data, groups, target, settings, higher_is_better=target_family(target) != "ppl")
    X, y, mask, notes = model_inputs(roles, source)
    notes = [*_cell_notes(loaded, roles), *_unknown_notes(roles), *_near_duplicate_notes(roles), *notes]
    g = None if groups is None else groups.to_numpy()[mask]
    sets, default = feature_sets(roles, list(X.columns))
    everything = compare_predictors(X, y, g, seed, sets)
    role_scores = judge_roles(X, y, g, everything, {EXPORTED: default, **{fs.name: (fs.name,) for fs in sets}},
                              seed)
    comparison = replace(everything, scores=[s for s in everything.scores if s.feature_set in default])
    n_configs = None if groups is None else int(groups[mask].nunique())
    model = build_model(target, comparison, X, n_configs, source, role_scores[EXPORTED])
    within = lomo = None
    if grouping is not None:
        overall = replicates.between if replicates is not None else target_corrs
        within = analyze_within(data, target, roles.features, grouping, (X, y, mask), groups, seed,
                                lambda usable: feature_sets(roles, usable)[0], overall)
        if grouping.note:
            notes.append(grouping.note)
    lomo = _lomo(loaded.rows, X, y, mask, comparison)
    return Analysis(loaded.path, target, seed, loaded, roles, target_corrs, [target, *heat_features],
                    fams["pairs"], comparison, model, role_scores, sets, groups, replicates, [*loaded.notes, *notes],
                    ranked, within, lomo, provenance,
                    compare_untuned_recovered(loaded, target, seed, TargetScores(
                        target, {c.x: c for c in fams["target"]}, role_scores)))


def _lomo(rows: pd.DataFrame, X: pd.DataFrame, y, mask, comparison: Comparison) -> LeaveOneModelOut | None:
    """Leave-one-model-out R² of the exported predictor, where the rows name two or more models."""
    from gradprune.analysis.levels import MODEL_SOURCES

    column = next((c for c in MODEL_SOURCES if c in rows.columns and rows[c].nunique() >= 2), None)
    if column is None:
        return None
    best = comparison.best
    columns = next(fs.columns for fs in comparison.feature_sets if fs.name == best.feature_set)
    models = rows[column].astype("string").to_numpy(dtype=object, na_value=None)[mask]
    return leave_one_model_out(X, y, models, best, columns, comparison.max_features)
