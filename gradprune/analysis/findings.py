"""The report's plain-language key findings and its verdicts on the original tool's hypotheses."""

from __future__ import annotations

import math
from collections.abc import Sequence

from gradprune.analysis.correlations import ALPHA, Correlation, strength
from gradprune.analysis.document import fmt_ci, fmt_r, p_is
from gradprune.analysis.loading import describe_exclusions
from gradprune.analysis.pipeline import EXPORTED, Analysis
from gradprune.analysis.replicates import VarianceDecomposition
from gradprune.prediction.columns import ROLE_TITLES, target_family
from gradprune.prediction.selection import RoleScore

SMALL_N = 20  # below this many independent units, say that the evidence is weak
R2_CLAIM = 0.7  # the original tool's claim: some predictor reaches R² > 0.7

# (claim, candidate columns, expected sign of the correlation with accuracy, must the relation be strong?)
CORRELATION_HYPOTHESES = [
    ("grad_norm_ratio is strongly negatively correlated with {t}", ("grad_norm_ratio",), -1, True),
    ("shorter taylor_seq_len gives higher {t}", ("taylor_seq_len", "calibration.seq_len"), -1, False),
    ("extreme_pruning_layers is negatively correlated with {t}", ("extreme_pruning_layers",), -1, False),
]


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


def _find(corrs: Sequence[Correlation], names: Sequence[str]) -> Correlation | None:
    return next((c for name in names for c in corrs if c.x == name), None)


def correlation_verdict(c: Correlation | None, sign: int, strong: bool, target: str) -> str:
    """SUPPORTED / PARTLY SUPPORTED / CONTRADICTED / NOT SUPPORTED / CANNOT BE CHECKED, with the numbers."""
    if c is None:
        return "CANNOT BE CHECKED: the column is not in this CSV."
    if not c.defined:
        return f"CANNOT BE CHECKED: {c.x} is {c.undefined.removeprefix('undefined ')} in the used rows."
    numbers = (f"Spearman ρ = {fmt_r(c.spearman)} (95% CI {fmt_ci(c.spearman_ci)}), Pearson r = {fmt_r(c.pearson)}, "
               f"{p_is('BH-adjusted p', c.spearman_p_adj)}, n = {c.n}")
    weak = c.n < SMALL_N
    if c.significant and c.spearman * sign > 0:
        if strong and abs(c.spearman) < 0.5:
            return f"PARTLY SUPPORTED: the sign is as claimed but the relation is only {strength(c.spearman)}; {numbers}."
        caveat = f" With n = {c.n} this is preliminary." if weak else ""
        return f"SUPPORTED: {numbers}.{caveat}"
    if c.significant:
        return f"CONTRADICTED: the relation with {target} is significant but has the opposite sign; {numbers}."
    caveat = f" With n = {c.n} the evidence is weak either way." if weak else ""
    return f"NOT SUPPORTED: no significant relation; {numbers}.{caveat}"


def _level_means(a: Analysis, column: str) -> str:
    data = a.roles.data
    if column not in data or data[column].nunique() > 10:
        return ""
    means = data.groupby(column)[a.target].mean()
    return f" Mean {a.target} by {column}: " + ", ".join(f"{k:g}: {v:.4f}" for k, v in means.items()) + "."


def hypotheses(a: Analysis) -> list[str]:
    """The original tool's four hypotheses, each with a verdict and its numbers."""
    t = a.target
    sign_flip = -1 if target_family(t) == "ppl" else 1  # lower perplexity is better: expected signs reverse
    scope = (f" Tested on per-config means ({a.replicates.target.groups} configs), since replicates of one "
             "config are not independent." if a.replicates is not None else "")
    out = []
    if t != "acc_mean":
        reversed_ = " with the expected signs reversed (lower perplexity is better)" if sign_flip < 0 else ""
        out.append(f"The hypotheses are about acc_mean; they are tested here on the target {t}{reversed_}.")
    for k, (claim, names, sign, strong) in enumerate(CORRELATION_HYPOTHESES, start=1):
        corrs = a.replicates.between if a.replicates is not None else a.target_corrs
        # a column grouped with a near-duplicate is tested as the group's kept column
        names = tuple(dict.fromkeys(x for n in names for x in (n, a.roles.near_duplicates.get(n, ("",))[0]) if x))
        c = _find(corrs, names) or _find(a.target_corrs, names)
        verdict = correlation_verdict(c, sign * sign_flip, strong, t)
        extra = _level_means(a, c.x) if k == 2 and c is not None and c.defined else ""
        out.append(f"({k}) {claim.format(t=t)}: {verdict}{extra}{scope if c is not None and c.defined else ''}")
    out.append(f"(4) a predictor reaches R² > {R2_CLAIM}: {r2_verdict(a)}")
    return out


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


def r2_verdict(a: Analysis) -> str:
    """Whether the predictor reaches R² > 0.7 out of sample: nested cross-validated R², permutation p."""
    rs, scheme = _exported(a), a.comparison.scheme.name
    best = rs.best
    numbers = (f"best predictor {best.label}: R² = {best.r2:.4f} in sample, {best.r2_cv:.4f} cross-validated "
               f"({scheme}), nested cross-validated R² = {rs.r2_cv_nested:.4f}, "
               f"{permutation_phrase(rs, a.replicates is not None)}")
    if rs.r2_cv_nested > R2_CLAIM and rs.p_value < ALPHA:
        return f"SUPPORTED: {numbers}."
    top_in = max(a.comparison.scores, key=lambda s: s.r2)
    if top_in.r2 > R2_CLAIM:
        return (f"NOT SUPPORTED out of sample: {top_in.label} reaches R² = {top_in.r2:.4f} in sample, but the "
                f"choice among the candidates reaches only {rs.r2_cv_nested:.4f} nested cross-validated; the "
                f"in-sample fit is optimistic ({numbers}).")
    return f"NOT SUPPORTED: {numbers}."


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


def role_sentence(a: Analysis) -> str:
    """Which role (settings, gradient statistics, proxies, both) predicts the target best."""
    judged = {name: rs for name, rs in a.role_scores.items() if name != EXPORTED}
    beating = {name: rs for name, rs in judged.items() if claims_prediction(rs)}
    if not beating:
        return (f"No feature role predicts {a.target} better than chance ("
                + "; ".join(f"{name}: nested R² = {rs.r2_cv_nested:.4f}, p = {rs.p_value:.2g}"
                            for name, rs in judged.items()) + ").")
    name, rs = max(beating.items(), key=lambda kv: kv[1].r2_cv_nested)
    return (f"The {ROLE_TITLES.get(name, name)} predict {a.target} best: nested cross-validated R² = "
            f"{rs.r2_cv_nested:.4f}, permutation p = {rs.p_value:.2g}"
            + "".join(f"; {other}: {o.r2_cv_nested:.4f} (p = {o.p_value:.2g})"
                      for other, o in judged.items() if other != name) + ".")


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


def key_findings(a: Analysis) -> list[str]:
    """The report's opening bullets, most important first."""
    out = [" ".join([f"Data: {describe_exclusions(a.loaded)}; target {a.target}.", *(f"Note: {n}." for n in a.notes)])]
    if a.replicates is not None:
        out.append("Replicates: " + variance_sentence(a.replicates.target, a.target, setting_trends(a)))
        rep = a.replicates
        out.append(correlation_summary(rep.between, a.target, f"Across settings (per-config means, "
                                                               f"n = {rep.target.groups} configs)"))
        out.append(correlation_summary(rep.within, a.target, "Within settings (each replicate against its "
                                                              "config's mean: seed-to-seed differences)"))
        if (best := best_setting_sentence(a)) is not None:
            out.append(best)
    else:
        out.append(correlation_summary(a.target_corrs, a.target, "Correlations"))
    mono = monotone_sentence(a.replicates.between if a.replicates is not None else a.target_corrs, a.target)
    if mono:
        out.append(mono)
    out.append(predictor_sentence(a))
    if len(a.role_scores) > 2:
        out.append(role_sentence(a))
    n, unit = units(a)
    if n < SMALL_N:
        out.append(f"With only n = {n} {unit}, the evidence is weak: only large effects can reach significance, "
                   "and bootstrap intervals from so few points understate the uncertainty; treat these findings "
                   "as preliminary.")
    return out
