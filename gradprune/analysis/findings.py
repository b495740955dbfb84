"""The sentences of the report's key findings (assembled in order by :mod:`gradprune.analysis.key_findings`;
the original tool's hypotheses: ``analysis/hypotheses.py``)."""

from __future__ import annotations

import math
from collections.abc import Sequence

from gradprune.analysis.correlations import ALPHA, Correlation, strength
from gradprune.analysis.document import fmt_ci, fmt_r, p_is
from gradprune.analysis.pipeline import EXPORTED, Analysis
from gradprune.analysis.replicates import VarianceDecomposition
from gradprune.prediction.columns import RATIO, ROLE_TITLES, STATISTIC
from gradprune.prediction.selection import RoleScore

SMALL_N = 20  # below this many independent units, say that the evidence is weak


def units(a: Analysis) -> tuple[int, str]:
    """The number of independent units and their name: configs when there are replicates, else rows."""
    if a.replicates is not None:
        return a.replicates.target.groups, "configs"
    return a.n, "rows"


def describe(c: Correlation, target: str) -> str:
    """``x``: direction, strength and the numbers, in one phrase."""
    direction = "lower" if c.spearman < 0 else "higher"
    # a size word is only earned by a relation that is there: "strong" for a non-significant one misleads
    size = strength(c.spearman) if c.significant else "not significant"
    return (f"higher {c.x} goes with {direction} {target} ({size}: Spearman ρ = "
            f"{fmt_r(c.spearman)}, 95% CI {fmt_ci(c.spearman_ci)}, {p_is('BH-adjusted p', c.spearman_p_adj)}, "
            f"n = {c.n})")


def correlation_summary(corrs: Sequence[Correlation], target: str, scope: str) -> str:
    """One sentence on which features are significantly related to the target in ``scope``."""
    defined = [c for c in corrs if c.defined]
    if not defined:
        return f"{scope}: no feature varies, so no correlation can be computed."
    sig = [c for c in defined if c.significant]
    if not sig:
        best = min(defined, key=lambda c: c.spearman_p_adj)
        return (f"{scope}: no feature is significantly related to {target} after Benjamini–Hochberg adjustment "
                f"(q < {ALPHA}); the closest: {describe(best, target)}.")
    top = "; ".join(describe(c, target) for c in sig[:3])
    more = f" (and {len(sig) - 3} more)" if len(sig) > 3 else ""
    verb = "is" if len(sig) == 1 else "are"
    return (f"{scope}: {len(sig)} of {len(defined)} features {verb} significantly related to {target} after "
            f"Benjamini–Hochberg adjustment (q < {ALPHA}): {top}{more}.")


def variance_sentence(vd: VarianceDecomposition, target: str, trends: Sequence[Correlation] = ()) -> str:
    """The variance decomposition of the target in plain words, with ``ICC = 0.xxxx``.

    ``trends``: significant correlations of setting parameters with the per-config mean target. A trend
    test is more powerful than the omnibus ANOVA, so a non-significant ANOVA beside a significant trend
    is reported as exactly that, never as "no setting effect".
    """
    if not math.isfinite(vd.icc_raw):
        return f"The variance of {target} could not be split into settings and seeds (too few replicates)."
    pct = 100 * vd.icc
    raw = f" (raw estimate {vd.icc_raw:.4f}, clipped at 0)" if vd.icc_raw < 0 else ""
    text = (f"ICC = {vd.icc:.4f}{raw}: {pct:.1f} % of the variance of {target} is between settings; the rest "
            f"({100 - pct:.1f} %) is calibration noise (seed to seed, {vd.groups} settings, {vd.n} rows).")
    anova = f"one-way ANOVA F = {vd.f:.3g}, {p_is('p', vd.p)}"
    if vd.p < ALPHA:
        text += f" The settings differ ({anova})"
        text += (": a real setting effect, but small next to calibration noise, so compare settings by their "
                 "mean over seeds." if vd.icc < 0.5 else ": the setting effect dominates calibration noise.")
    elif trends:
        shown = "; ".join(f"{c.x}: Spearman ρ = {fmt_r(c.spearman)}, {p_is('BH-adjusted p', c.spearman_p_adj)}"
                          for c in trends)
        text += (f" The omnibus test over all settings does not reach significance ({anova}), but a trend along "
                 f"a setting parameter does ({shown}); a trend test has more power than the ANOVA, so the setting "
                 "effect is that trend.")
    else:
        text += (f" The settings do not differ detectably ({anova}): no setting effect can be claimed from this "
                 "data; the differences between settings are within calibration noise.")
    return text


def setting_trends(a: Analysis) -> list[Correlation]:
    """Significant correlations of setting parameters (constant within configs) with the per-config means."""
    if a.replicates is None:
        return []
    settings = {v.column for v in a.replicates.features if v.msw == 0}
    return [c for c in a.replicates.between if c.x in settings and c.significant]


def claims_prediction(rs: RoleScore) -> bool:
    """A predictive model is claimed only when the choice beats chance (permutation p < ALPHA) and carries
    over to rows it never saw (nested cross-validated R² > 0)."""
    return rs.p_value < ALPHA and rs.r2_cv_nested > 0


def permutation_phrase(rs: RoleScore, grouped: bool) -> str:
    """``permutation p = 0.01 (99 permutations of …)``."""
    what = "whole configs' targets shuffled" if grouped else "targets shuffled"
    return f"permutation p = {rs.p_value:.2g} ({rs.permutations} permutations, {what}, the whole choice re-run each time)"


def _exported(a: Analysis) -> RoleScore:
    return a.role_scores[EXPORTED]


def predictor_sentence(a: Analysis) -> str:
    """The exported predictor and whether it predicts better than chance, in one sentence."""
    rs, scheme = _exported(a), a.comparison.scheme.name
    best, k = rs.best, len(a.comparison.scores)
    chosen = (f"the best of {k} candidates (predictors × feature sets of {', '.join(rs.feature_sets)}) is "
              f"{best.label} (using {', '.join(best.fit.features) or 'no feature'}), cross-validated "
              f"R² = {best.r2_cv:.4f} "
              f"({scheme}); with the choice repeated inside every fold (nested cross-validation) R² = "
              f"{rs.r2_cv_nested:.4f}; {permutation_phrase(rs, a.replicates is not None)}")
    if rs.p_value >= ALPHA:
        return (f"The prediction model is no better than chance: {chosen}. A shuffled {a.target} is predicted this "
                f"well as often, so these features do not detectably predict {a.target} in this data; "
                "prediction_model.json is written for inspection, not for use.")
    if rs.r2_cv_nested <= 0:
        return (f"No predictive model can be claimed: {chosen}. The best candidate beats the shuffled targets, "
                "but the choice among the candidates does not carry over to rows it never saw (nested R² ≤ 0).")
    return (f"Predictive model: {chosen}; in-sample R² = {best.r2:.4f}, nested cross-validated MAE = "
            f"{rs.mae_cv_nested:.4g}. Formula: {a.model.formula}.")


RATIO_MARGIN = 0.02  # nested R² the statistics must add over the pruning-ratio baseline to beat it


def role_sentence(a: Analysis) -> str:
    """Which role (settings, gradient statistics, proxies, ratio, combinations) predicts the target best,
    whether the statistics beat the pruning-ratio baseline, and why the exported model may score lower."""
    judged = {name: rs for name, rs in a.role_scores.items() if name != EXPORTED}
    beating = {name: rs for name, rs in judged.items() if claims_prediction(rs)}
    if not beating:
        text = (f"No feature role predicts {a.target} better than chance ("
                + "; ".join(f"{name}: nested R² = {rs.r2_cv_nested:.4f}, p = {rs.p_value:.2g}"
                            for name, rs in judged.items()) + ").")
    else:
        name, rs = max(beating.items(), key=lambda kv: kv[1].r2_cv_nested)
        text = (f"The {ROLE_TITLES.get(name, name)} predict {a.target} best: nested cross-validated R² = "
                f"{rs.r2_cv_nested:.4f}, permutation p = {rs.p_value:.2g}"
                + "".join(f"; {other}: {o.r2_cv_nested:.4f} (p = {o.p_value:.2g})"
                          for other, o in judged.items() if other != name) + ".")
    return " ".join(filter(None, [text, ratio_baseline_sentence(a), exported_gap_sentence(a)]))


def ratio_baseline_sentence(a: Analysis) -> str | None:
    """Where the pruning ratio varies: whether the gradient statistics beat it as a predictor."""
    stats, ratio = a.role_scores.get(STATISTIC), a.role_scores.get(RATIO)
    if stats is None or ratio is None:
        return None
    both = a.role_scores.get(f"{STATISTIC} + {RATIO}")
    added = (both.r2_cv_nested if both is not None else stats.r2_cv_nested) - ratio.r2_cv_nested
    numbers = (f"statistics: nested R² = {stats.r2_cv_nested:.4f}; pruning ratio and parameter counts alone: "
               f"{ratio.r2_cv_nested:.4f}" + (f"; both: {both.r2_cv_nested:.4f}" if both is not None else ""))
    if claims_prediction(stats) and added > RATIO_MARGIN and stats.r2_cv_nested > ratio.r2_cv_nested - RATIO_MARGIN:
        return f"The gradient statistics beat the baseline of the pruning ratio ({numbers})."
    return (f"The gradient statistics do not beat the baseline of the pruning ratio ({numbers}): what they "
            "predict across ratios, the ratio predicts already, so no claim about the statistics follows from it.")


GAP = 0.1  # a role's nested R² this far above the exported choice's gets a sentence on why


def exported_gap_sentence(a: Analysis) -> str | None:
    """Why the exported model's nested R² can sit below a single role's (the headline vs the role table)."""
    exported = a.role_scores[EXPORTED]
    others = {n: rs for n, rs in a.role_scores.items() if n != EXPORTED}
    if not others:
        return None
    name, rs = max(others.items(), key=lambda kv: kv[1].r2_cv_nested)
    if rs.r2_cv_nested - exported.r2_cv_nested < GAP:
        return None
    tail = (f"and the {name} role's permutation p = {rs.p_value:.2g} is not below {ALPHA}, so its R² is reached as "
            "often with shuffled targets: neither is better than chance." if rs.p_value >= ALPHA else
            f"the {name} role's own result stands on its permutation p = {rs.p_value:.2g}.")
    return (f"The exported model's nested R² ({exported.r2_cv_nested:.4f}) is below the {name} role's "
            f"({rs.r2_cv_nested:.4f}) because the exported choice is made among all {len(a.comparison.scores)} "
            "candidates inside every fold, and a choice that changes from fold to fold predicts worse than one "
            f"role's few candidates; {tail}")


def best_setting_sentence(a: Analysis) -> str | None:
    """With replicates: the best setting by its mean over seeds, and whether it beats the runner-up."""
    b = a.best_settings
    if b is None or len(b.table) < 2:
        return None
    settings = [c for c in b.table.columns if c not in ("rank", "config_id", "n", "mean", "sd", "ci_low", "ci_high")]

    def desc(r) -> str:
        values = ", ".join(f"{s} = {r[s]:g}" for s in settings)
        return (f"config {r['config_id']}{f' ({values})' if values else ''}: mean {a.target} = {r['mean']:.4f}, "
                f"sd {r['sd']:.4f}, 95% CI {fmt_ci((r['ci_low'], r['ci_high']))}, n = {int(r['n'])}")

    top, second = b.table.iloc[0], b.table.iloc[1]
    text = f"Best setting by the mean over seeds (best_settings.csv): {desc(top)}; runner-up {desc(second)}."
    if not math.isfinite(b.p):
        return text + " Too few replicates to tell them apart."
    test = f"Welch t-test {p_is('p', b.p)}"
    if b.p < ALPHA:
        return text + (f" The best is distinguishable from the runner-up ({test}; the two were picked as the top "
                       "two after looking at the data, so this p is optimistic).")
    return text + (f" The best is not distinguishable from the runner-up ({test}): their order is within "
                   "calibration noise, so the top settings are equally good on this evidence.")


MONOTONE_GAP = 0.1  # |Spearman| above |Pearson| by this much: monotone, but not a straight line


def monotone_sentence(corrs: Sequence[Correlation], target: str) -> str | None:
    """A sentence on significant relations that are monotone but clearly not linear, or None."""
    bent = [c for c in corrs if c.significant and abs(c.spearman) - abs(c.pearson) > MONOTONE_GAP]
    if not bent:
        return None
    shown = "; ".join(f"{c.x}: Spearman ρ = {fmt_r(c.spearman)}, Pearson r = {fmt_r(c.pearson)}" for c in bent[:3])
    return (f"Monotone but not linear: {shown}. The ranks agree more closely than a straight line fits, so "
            f"{target} changes with the feature in one direction but not at one rate; the isotonic predictor "
            "fits such shapes and a linear model understates them.")
