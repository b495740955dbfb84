"""correlation_report.txt / .md: key findings and hypotheses first, then the tables and the method."""

from __future__ import annotations

import math
from collections.abc import Sequence

from gradprune.analysis.bootstrap import N_RESAMPLES
from gradprune.analysis.correlations import ALPHA, EXACT_MAX_N, PERMUTATION_MAX_N, Correlation, stars
from gradprune.analysis.correlations import N_PERMUTATIONS as MC_PERMUTATIONS
from gradprune.analysis.document import (
    Bullets,
    Section,
    Table,
    fmt_ci,
    fmt_num,
    fmt_p,
    fmt_r,
    to_markdown,
    to_text,
)
from gradprune.analysis.findings import role_sentence, setting_trends, variance_sentence
from gradprune.analysis.hypotheses import hypotheses
from gradprune.analysis.key_findings import key_findings
from gradprune.analysis.pipeline import EXPORTED, HEATMAP_MAX, Analysis
from gradprune.analysis.within_findings import lomo_sentence
from gradprune.prediction.columns import NEAR_DUPLICATE, ROLE_TITLES
from gradprune.prediction.selection import N_PERMUTATIONS as N_MODEL_PERMUTATIONS
from gradprune.prediction.selection import STOP_AFTER

ILL_CONDITIONED = ("grad_mean_ratio is ill-conditioned when the |mean gradient| of a layer is near 0 (gradients that "
                   "average out): a small change, even a sign flip, of a near-zero mean moves the ratio a lot "
                   "(1.7 → 18.6 in one case), so its correlations say little about the calibration setting")
MAX_CONFIG_ROWS = 60  # configs listed in the report; per_config.csv holds them all


def correlation_table(corrs: Sequence[Correlation], first: str = "feature") -> Table:
    """One row per pair: n, Spearman and Pearson with CI, p and BH-adjusted p; undefined pairs say so."""
    headers = [first, "n", "Spearman ρ", "95% CI", "p", "p (BH)", "", "Pearson r", "95% CI", "p", "p (BH)", ""]
    rows = []
    for c in corrs:
        if not c.defined:
            rows.append([c.x, str(c.n), c.undefined, *[""] * 9])
            continue
        rows.append([c.x, str(c.n), fmt_r(c.spearman), fmt_ci(c.spearman_ci), fmt_p(c.spearman_p),
                     fmt_p(c.spearman_p_adj), stars(c.spearman_p_adj), fmt_r(c.pearson), fmt_ci(c.pearson_ci),
                     fmt_p(c.pearson_p), fmt_p(c.pearson_p_adj), stars(c.pearson_p_adj)])
    return Table(headers, rows, "lrrrrrlrrrrl")


def _pairs_section(a: Analysis) -> Section:
    pairs = sorted(a.pair_corrs, key=lambda c: -abs(c.spearman) if c.defined else 1.0)
    table = correlation_table(pairs, "x")
    table.headers.insert(1, "y")
    table.align = "l" + table.align
    for row, c in zip(table.rows, pairs, strict=True):
        row.insert(1, c.y)
    shown = len(a.heatmap_columns) - 1
    limit = f" (the {HEATMAP_MAX} features most correlated with the target)" if shown == HEATMAP_MAX else ""
    return Section("Correlations between the heatmap's columns", [
        f"Every pair of the {len(a.heatmap_columns)} columns in correlation_heatmap.png{limit}, strongest first; "
        "BH adjustment over all these pairs.", table])


def _replicate_section(a: Analysis) -> Section:
    rep = a.replicates
    vd_rows = [[v.column, str(v.groups), str(v.n), fmt_num(v.f), fmt_p(v.p), f"{v.icc_raw:.4f}", f"{v.icc:.4f}",
                f"{100 * v.icc:.1f} %"] for v in [rep.target, *rep.features]
               if math.isfinite(v.icc_raw) and v.msw > 0]
    settings = [v.column for v in rep.features if v.msw == 0]
    blocks: list = [
        variance_sentence(rep.target, a.target, setting_trends(a)),
        "One-way random-effects decomposition over configs (seeds as replicates). ICC(1) = (MSB − MSW) / "
        "(MSB + (k0 − 1)·MSW), k0 the adjusted mean group size; the raw estimate may be negative, the share "
        "of variance between settings is clipped at 0. Features below the target: how much of each statistic "
        "is fixed by the setting rather than by the calibration draw.",
        Table(["column", "configs", "rows", "F", "p", "ICC raw", "ICC", "between settings"], vd_rows),
    ]
    if settings:
        blocks.append("Constant within every config (setting parameters): " + ", ".join(settings) + ".")
    pc = rep.per_config.head(MAX_CONFIG_ROWS)
    t = a.target
    cols = ["config_id", "n", f"{t}_mean", f"{t}_sd", *(f"{s}_mean" for s in settings)]
    blocks.append(Table(["config_id", "n", f"{t} mean", f"{t} sd", *settings],
                        [[str(r[0]), str(int(r[1])), *(fmt_num(v) for v in r[2:])] for r in pc[cols].itertuples(False)]))
    if len(rep.per_config) > MAX_CONFIG_ROWS:
        blocks.append(f"First {MAX_CONFIG_ROWS} of {len(rep.per_config)} configs; all in per_config.csv.")
    blocks += [
        f"Correlations of per-config means with the mean {t} (the setting effect; n = configs):",
        correlation_table(rep.between),
        f"Within-config correlations: each replicate's deviation from its config mean, in a feature against {t} "
        "(does a replicate with a lower value than its siblings score higher?). p-values and Fisher-z 95% "
        "intervals use N − g − 1 degrees of freedom (g config means were estimated).",
        correlation_table([c for c in rep.within if c.x not in settings]),
    ]
    return Section("Replicates: settings against calibration noise", blocks)


def _feature_list(features: Sequence[str], width: int = 48) -> str:
    text = ", ".join(features) or "(none: the mean)"
    return text if len(text) <= width else f"{len(features)} features: {text[:width - 14].rsplit(',', 1)[0]}, …"


def _role_table(a: Analysis) -> Table:
    rows = []
    for name, rs in a.role_scores.items():
        if name == EXPORTED:
            continue
        cols = next(fs.columns for fs in a.role_feature_sets if fs.name == name)
        rows.append([name, _feature_list(cols), rs.best.label.split(" on ")[0], f"{rs.best.r2_cv:.4f}",
                     f"{rs.r2_cv_nested:.4f}", f"{rs.p_value:.2g}", str(rs.permutations)])
    return Table(["features by role", "columns", "best predictor", "R² CV (best)", "R² nested CV", "perm. p",
                  "perms"], rows, "lllrrrr")


def _predictor_section(a: Analysis) -> Section:
    cmp, model, rs = a.comparison, a.model, a.role_scores[EXPORTED]
    rows = [[s.label, _feature_list(s.fit.features), f"{s.r2:.4f}", f"{s.r2_cv:.4f}",
             fmt_num(s.mae), fmt_num(s.mae_cv)] for s in cmp.scores]
    unit = "configs" if a.replicates is not None else "rows"
    shuffled = "whole configs' targets" if a.replicates is not None else "the targets"
    blocks: list = [
        f"Cross-validation: {cmp.scheme.name} ({len(cmp.scheme.splits)} folds over {cmp.scheme.units} {unit}); "
        f"each model chooses its features inside every fold, at most {cmp.max_features} (n/4). Predicting the "
        f"training mean scores cross-validated R² = {cmp.baseline_r2_cv:.4f}. The exported model is chosen among "
        f"{len(cmp.scores)} candidates: every predictor on every feature set of the calibration settings and "
        "gradient statistics (evaluation outputs such as perplexity are never features).",
        Table(["predictor", "features", "R² in sample", "R² CV", "MAE in sample", "MAE CV"], rows, "llrrrr"),
        f"The best candidate's cross-validated R² ({rs.best.r2_cv:.4f}) is optimistic: it won a comparison. "
        f"Judged without that optimism, the choice among the {len(cmp.scores)} candidates repeated inside every "
        f"outer training fold (nested cross-validation) scores R² = {rs.r2_cv_nested:.4f} (MAE "
        f"{fmt_num(rs.mae_cv_nested)}); with {shuffled} shuffled and the whole choice re-run, the best candidate "
        f"reached R² ≥ {rs.best.r2_cv:.4f} in {rs.exceedances} of {rs.permutations} permutations: permutation "
        f"p = {rs.p_value:.2g}" + (" — no better than chance." if rs.p_value >= ALPHA else "."),
        f"Exported to prediction_model.json: {model.formula}",
    ]
    if model.isotonic is None:
        blocks.append(Table(["feature", "coefficient", "standardised", "training min", "training max"],
                            [[f, fmt_num(model.coefficients[f]), fmt_num(model.standardized_coefficients[f]),
                              fmt_num(model.training_ranges[f].min), fmt_num(model.training_ranges[f].max)]
                             for f in model.features]))
    else:
        iso = model.isotonic
        blocks.append(Table([iso.feature, f"predicted {a.target}"],
                            [[fmt_num(x), fmt_num(y)] for x, y in zip(iso.x, iso.y, strict=True)], "rr"))
    simpler = [s for s in cmp.scores[1:] if len(s.fit.features) < len(cmp.best.fit.features)
               and s.r2_cv >= cmp.best.r2_cv - 0.01]
    if simpler:
        s = simpler[0]
        blocks.append(f"{s.label} ({len(s.fit.features)} feature(s)) predicts almost as well (cross-validated R² = "
                      f"{s.r2_cv:.4f} against {cmp.best.r2_cv:.4f}): the simpler model may be the better choice.")
    if len(a.role_scores) > 2:
        blocks += ["Feature roles side by side: the same choice among the predictors, restricted to one role's "
                   "columns, with its nested cross-validated R² and permutation p (same permutations).",
                   _role_table(a), role_sentence(a)]
    if cmp.skipped:
        blocks.append("Skipped predictors: " + "; ".join(cmp.skipped))
    return Section("Predictors", blocks)


def _columns_section(a: Analysis) -> Section:
    r = a.roles
    items = [f"Features ({len(r.features)}): " + ", ".join(r.features)]
    items += [f"{ROLE_TITLES[role].capitalize()} ({role}): {', '.join(cols)}" for role, cols in r.by_role().items()]
    named = [("Constant over the used rows (undefined (constant), not features)", r.constant),
             ("Evaluation outputs (measured after the evaluation the predictors replace), never features",
              r.evaluation),
             ("Non-numeric, skipped", r.non_numeric),
             (f"Parts or relatives of the target {a.target}, not used to predict it", r.target_parts),
             ("Identifiers, seeds, flags and timings, not features", r.bookkeeping)]
    items += [f"{label}: {', '.join(cols)}" for label, cols in named if cols]
    items += [f"{d} is identical to {k} and is left out" for d, k in r.duplicates.items()]
    items += [f"{m} orders the rows as {k} does (Spearman ρ = {fmt_r(rho)}, |ρ| ≥ {NEAR_DUPLICATE}): one feature, "
              f"reported as {k} and counted once in the BH correction" for m, (k, rho) in r.near_duplicates.items()]
    if "grad_mean_ratio" in r.features or "grad_mean_ratio" in r.near_duplicates:
        items.append(ILL_CONDITIONED)
    return Section("Columns", [Bullets(items)])


def _method_section(a: Analysis) -> Section:
    return Section("Method", [Bullets([
        "Spearman and Pearson coefficients and two-sided p-values from scipy.stats, over the rows where both "
        f"values exist (n per pair); for n ≤ {EXACT_MAX_N} the p-values are exact permutation p-values (all "
        f"n! pairings), for n ≤ {PERMUTATION_MAX_N} Monte Carlo permutation p-values (scipy.stats.permutation_test, "
        f"{MC_PERMUTATIONS} pairings, so never below {2 / (MC_PERMUTATIONS + 1):.0e}), where scipy's t approximation "
        "prints p-values no permutation of so few points can resolve; above, scipy's t approximation.",
        f"Features whose |Spearman| with another is ≥ {NEAR_DUPLICATE} over the rows are one feature (reported "
        "once, one test in the BH correction).",
        f"p (BH): Benjamini–Hochberg adjusted within each table; significant means adjusted p < {ALPHA}. "
        "Stars: * < 0.05, ** < 0.01, *** < 0.001 (adjusted).",
        f"95% CI: percentile bootstrap over rows, {N_RESAMPLES} resamples, seed {a.seed}.",
        "Undefined (constant) means a column does not vary: no coefficient exists, none is reported.",
        "R² CV: 1 − Σ(y − ŷ_cv)² / Σ(y − ȳ)², each ŷ_cv from a model fitted without that row's fold.",
        "Nested CV: in every outer training fold, every candidate (predictor × feature set) is scored by an inner "
        "cross-validation on that fold alone, the best is refitted on the fold and predicts the held-out rows; "
        "so the choice among candidates never sees the rows it is scored on.",
        f"Permutation p: the targets are shuffled ({'whole configs, ' if a.replicates is not None else ''}"
        f"at most {N_MODEL_PERMUTATIONS} times, stopping once {STOP_AFTER} shuffles reached the observed value: "
        "Besag and Clifford's sequential p-value) and every candidate is cross-validated again; p is the share "
        "of shuffles in which the best candidate's cross-validated R² reached the observed one. A predictive model "
        f"is claimed only for p < {ALPHA} and nested R² > 0.",
        *([] if a.replicates is None else [
            "Rows of one config are not independent: settings are judged on per-config means (n = configs), "
            "the all-rows table is descriptive."]),
    ])])


def build_sections(a: Analysis) -> list[Section]:
    """Every section of the report, in reading order."""
    sections = [Section("Key findings", [Bullets(key_findings(a))]),
                Section("Hypotheses of the original tool", [Bullets(hypotheses(a))])]
    if a.replicates is not None:
        sections.append(_replicate_section(a))
    sections += [
        Section(f"Correlations with {a.target} (all rows)", [
            f"Every candidate feature against {a.target}, strongest |ρ| first; n = {a.n} rows."
            + ("" if a.replicates is None else " Replicates of one config are not independent, so these "
               "p-values and intervals are optimistic: judge settings by the per-config table above.")
            + ("" if a.within is None else f" These pool every {a.within.grouping.noun}: judge a feature by the "
               f"within-{a.within.grouping.noun} table above, not by these."),
            correlation_table(a.target_corrs)]),
        _predictor_section(a), _pairs_section(a), _columns_section(a), _method_section(a),
    ]
    if a.within is not None:
        from gradprune.analysis.within_findings import within_section

        sections.insert(2 + (a.replicates is not None), within_section(a))
    if (lomo := lomo_sentence(a)) is not None:
        sections[-4].blocks.append(lomo)  # the predictors section
    if a.recovery is not None:  # the target untuned and after recovery: both, side by side
        from gradprune.analysis.recovered import recovery_section

        after = next((i for i, s in enumerate(sections) if s.title == "Predictors"), len(sections) - 1)
        sections.insert(after + 1, recovery_section(a.recovery))
    return sections


def render_report(a: Analysis) -> tuple[str, str]:
    """The report as (plain text, Markdown)."""
    title = "gradprune analysis of " + ", ".join(map(str, a.sources))
    sections = build_sections(a)
    return to_text(title, sections), to_markdown(title, sections)
