"""The report's sentences about an analysis split by a grouping (a pruning ratio, a model), and about
the leave-one-model-out check. The rule: a pooled correlation is never stated as a finding when it does
not hold within a level; the within-level relation is the finding."""

from __future__ import annotations

from gradprune.analysis.correlations import Correlation
from gradprune.analysis.document import fmt_ci, fmt_r, p_is
from gradprune.analysis.findings import claims_prediction, correlation_summary
from gradprune.analysis.pipeline import Analysis
from gradprune.analysis.within import HOLDS, NOT_WITHIN, ONLY_WITHIN, REVERSES, WithinAnalysis
from gradprune.prediction.columns import ROLE_TITLES
from gradprune.prediction.selection import RoleScore


def _numbers(c: Correlation) -> str:
    return f"Spearman ρ = {fmt_r(c.spearman)}, 95% CI {fmt_ci(c.spearman_ci)}, {p_is('BH-adjusted p', c.spearman_p_adj)}"


def _per_level(w: WithinAnalysis, feature: str) -> str:
    parts = []
    for lv in w.levels:
        c = next((c for c in lv.corrs if c.x == feature), None)
        if c is not None and c.defined:
            parts.append(f"{lv.label}: ρ = {fmt_r(c.spearman)} (n = {c.n})")
    return "; ".join(parts)


def scope(w: WithinAnalysis) -> str:
    """``Within a pruning ratio (3 levels: 0.2, 0.3, 0.4; …)``."""
    g = w.grouping
    return (f"Within a {g.noun} ({len(w.levels)} levels of {g.column}: {', '.join(g.levels)}; the {g.noun} as a "
            f"covariate: each value minus its level's mean)")


def within_correlation_summary(a: Analysis) -> str:
    """Which features are related to the target at a fixed level (the finding of a split analysis)."""
    return correlation_summary(a.within.pooled, a.target, scope(a.within))


def pooled_caveats(a: Analysis) -> list[str]:
    """One sentence per feature whose all-rows correlation fares differently within a level."""
    w, t = a.within, a.target
    noun = w.grouping.noun
    overall = a.replicates.between if a.replicates is not None else a.target_corrs
    out = []
    for feature, v in w.verdicts.items():
        c = next(x for x in overall if x.x == feature)
        inner = w.pooled_of(feature)
        levels = _per_level(w, feature)
        per = f" Per {noun}: {levels}." if levels else ""
        if v == NOT_WITHIN:
            out.append(f"Does not hold within a {noun}: {feature} correlates with {t} pooled over the {noun}s "
                       f"(Spearman ρ = {fmt_r(c.spearman)}, {p_is('BH-adjusted p', c.spearman_p_adj)}, n = {c.n}), "
                       f"but not at a fixed {noun} ({_numbers(inner)}): the pooled correlation reflects the "
                       f"differences between the {noun}s and is not a finding.{per}")
        elif v == REVERSES:
            out.append(f"Reversed within a {noun} (Simpson's paradox): {feature} goes with "
                       f"{'lower' if inner.spearman < 0 else 'higher'} {t} at a fixed {noun} ({_numbers(inner)}), "
                       f"while the correlation pooled over the {noun}s has the opposite sign (Spearman ρ = "
                       f"{fmt_r(c.spearman)}, n = {c.n}) because the {noun} moves both; the within-{noun} "
                       f"direction is the finding, the pooled one is not.{per}")
        elif v == ONLY_WITHIN:
            out.append(f"Only within a {noun}: {feature} is related to {t} at a fixed {noun} ({_numbers(inner)}) "
                       f"although not pooled over the {noun}s (Spearman ρ = {fmt_r(c.spearman)}).{per}")
        elif v == HOLDS:
            out.append(f"Holds within a {noun}: {feature}'s pooled correlation with {t} is also there at a fixed "
                       f"{noun} ({_numbers(inner)}).{per}")
    return out


def _role_list(scores: dict[str, RoleScore]) -> str:
    return "; ".join(f"{name}: nested R² = {rs.r2_cv_nested:.4f}, p = {rs.p_value:.2g}" for name, rs in scores.items())


def within_predictor_sentence(a: Analysis) -> str | None:
    """Whether any feature role predicts the target at a fixed level (pooled, level as covariate)."""
    w = a.within
    if w.pooled_roles is None:
        return None
    noun, t = w.grouping.noun, a.target
    beating = {n: rs for n, rs in w.pooled_roles.items() if claims_prediction(rs)}
    how = (f"(the {noun} as a covariate: deviations from each level's mean; targets shuffled within a level in "
           "the permutation test)")
    if not beating:
        return (f"Within a {noun}, no feature role predicts {t} better than chance {how}: "
                f"{_role_list(w.pooled_roles)}.")
    name, rs = max(beating.items(), key=lambda kv: kv[1].r2_cv_nested)
    return (f"Within a {noun}, the {ROLE_TITLES.get(name, name)} predict {t} best {how}: nested cross-validated "
            f"R² = {rs.r2_cv_nested:.4f}, permutation p = {rs.p_value:.2g}; all roles: {_role_list(w.pooled_roles)}.")


def lomo_sentence(a: Analysis) -> str | None:
    """The leave-one-model-out R² of the exported predictor, in one sentence."""
    m = a.lomo
    if m is None:
        return None
    per = "; ".join(f"{name}: R² = {r2:.4f} on its own {n} rows" for name, (n, r2) in m.per_model.items())
    carries = m.r2 > 0 and m.r2 > m.baseline_r2
    verdict = ("it carries over to a model it was not fitted on" if carries else
               "it does not carry over to a model it was not fitted on: do not use it for another model")
    return (f"Across models (leave-one-model-out): the exported predictor ({m.predictor}), fitted without each "
            f"model and scored on that model's rows, reaches R² = {m.r2:.4f} over all held-out rows, against "
            f"{m.baseline_r2:.4f} for predicting the other models' mean; {verdict}. Per model: {per}.")


def within_section(a: Analysis):
    """The report's section on the split: correlations and predictor roles per level and pooled."""
    from gradprune.analysis.document import Section, Table, fmt_p

    w = a.within
    noun = w.grouping.noun
    overall = {c.x: c for c in (a.replicates.between if a.replicates is not None else a.target_corrs)}
    headers = ["feature", "all rows ρ", f"within {noun} ρ", "95% CI", "p (BH)", "pooled result",
               *(f"{lv.label} ρ" for lv in w.levels)]
    rows = []
    for c in w.pooled:
        if not c.defined and c.x not in overall:
            continue
        per = [next((fmt_r(x.spearman) for x in lv.corrs if x.x == c.x and x.defined), "–") for lv in w.levels]
        o = overall.get(c.x)
        rows.append([c.x, fmt_r(o.spearman) if o is not None and o.defined else "–",
                     fmt_r(c.spearman) if c.defined else c.undefined, fmt_ci(c.spearman_ci) if c.defined else "",
                     fmt_p(c.spearman_p_adj) if c.defined else "", w.verdicts.get(c.x, ""), *per])
    sizes = ", ".join(f"{lv.label}: {lv.n} rows" + (f" ({lv.units} configs)" if lv.units != lv.n else "")
                      for lv in w.levels)
    blocks: list = [
        f"{scope(w)}. Rows per level: {sizes}. The within-{noun} coefficient pools the levels with the {noun} as a "
        f"covariate (deviations from each level's mean; p-values and Fisher-z intervals on N − g − 1 degrees of "
        f"freedom, BH-adjusted over the features); the per-level columns are each level on its own"
        + (" (per-config means)" if a.replicates is not None else "") + ". 'Pooled result' says whether the "
        "all-rows correlation holds at a fixed level, does not hold, or reverses.",
        Table(headers, rows, "lrrrrl" + "r" * len(w.levels)),
    ]
    blocks += pooled_caveats(a)
    roles = list(dict.fromkeys([*(w.pooled_roles or {}), *(n for lv in w.levels for n in (lv.roles or {}))]))
    if roles:
        def cell(scores, name):
            rs = (scores or {}).get(name)
            return f"{rs.r2_cv_nested:.3f} (p {rs.p_value:.2g})" if rs is not None else "–"

        blocks += [f"Predictor roles within each {noun} (nested cross-validated R², permutation p); the last "
                   f"column pools the levels with the {noun} as a covariate.",
                   Table(["role", *(lv.label for lv in w.levels), f"within {noun}"],
                         [[n, *(cell(lv.roles, n) for lv in w.levels), cell(w.pooled_roles, n)] for n in roles])]
        skipped = [f"{lv.label} ({lv.skipped})" for lv in w.levels if lv.roles is None]
        if skipped:
            blocks.append("No predictor comparison for: " + "; ".join(skipped) + ".")
    if (s := within_predictor_sentence(a)) is not None:
        blocks.append(s)
    return Section(f"Within each {noun} ({w.grouping.column})", blocks)
