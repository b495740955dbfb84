"""The report's plain-language key findings and its verdicts on the original tool's hypotheses."""

from __future__ import annotations

import math
from collections.abc import Sequence

from gradprune.analysis.columns import target_family
from gradprune.analysis.correlations import ALPHA, Correlation, strength
from gradprune.analysis.document import fmt_ci, fmt_r, p_is
from gradprune.analysis.loading import describe_exclusions
from gradprune.analysis.pipeline import Analysis
from gradprune.analysis.replicates import VarianceDecomposition

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
    return (f"higher {c.x} goes with {direction} {target} ({strength(c.spearman)}: Spearman ρ = "
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


def variance_sentence(vd: VarianceDecomposition, target: str) -> str:
    """The variance decomposition of the target in plain words, with ``ICC = 0.xxxx``."""
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
    else:
        text += (f" The settings do not differ detectably ({anova}): no setting effect can be claimed from this "
                 "data; the differences between settings are within calibration noise.")
    return text


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
        c = _find(corrs, names) or _find(a.target_corrs, names)
        verdict = correlation_verdict(c, sign * sign_flip, strong, t)
        extra = _level_means(a, c.x) if k == 2 and c is not None and c.defined else ""
        out.append(f"({k}) {claim.format(t=t)}: {verdict}{extra}{scope if c is not None and c.defined else ''}")
    out.append(f"(4) a predictor reaches R² > {R2_CLAIM}: {r2_verdict(a)}")
    return out


def r2_verdict(a: Analysis) -> str:
    """Whether the best predictor reaches R² > 0.7, cross-validated R² next to the in-sample one."""
    best, scheme = a.comparison.best, a.comparison.scheme.name
    numbers = f"best predictor {best.label}: R² = {best.r2:.4f} in sample, {best.r2_cv:.4f} cross-validated ({scheme})"
    if best.r2_cv > R2_CLAIM:
        return f"SUPPORTED: {numbers}."
    top_in = max(a.comparison.scores, key=lambda s: s.r2)
    if top_in.r2 > R2_CLAIM:
        return (f"NOT SUPPORTED out of sample: {top_in.label} reaches R² = {top_in.r2:.4f} in sample, but "
                f"{top_in.r2_cv:.4f} cross-validated; the in-sample fit is optimistic ({numbers}).")
    return f"NOT SUPPORTED: {numbers}."


def predictor_sentence(a: Analysis) -> str:
    """The exported predictor and how well it predicts, in one sentence."""
    best, scheme = a.comparison.best, a.comparison.scheme.name
    if best.r2_cv <= 0:
        return (f"No predictor beats predicting the mean under {scheme} cross-validation (best: {best.label}, "
                f"R² = {best.r2:.4f} in sample, {best.r2_cv:.4f} cross-validated): these features do not predict "
                f"{a.target} in this data.")
    return (f"Best predictor ({scheme} cross-validation): {best.label} on {', '.join(best.fit.features)}: "
            f"R² = {best.r2:.4f} in sample, {best.r2_cv:.4f} cross-validated, cross-validated MAE = "
            f"{best.mae_cv:.4g}. Formula: {a.model.formula}.")


def key_findings(a: Analysis) -> list[str]:
    """The report's opening bullets, most important first."""
    out = [" ".join([f"Data: {describe_exclusions(a.loaded)}; target {a.target}.", *(f"Note: {n}." for n in a.notes)])]
    if a.replicates is not None:
        out.append("Replicates: " + variance_sentence(a.replicates.target, a.target))
        rep = a.replicates
        out.append(correlation_summary(rep.between, a.target, f"Across settings (per-config means, "
                                                               f"n = {rep.target.groups} configs)"))
        out.append(correlation_summary(rep.within, a.target, "Within settings (each replicate against its "
                                                              "config's mean: seed-to-seed differences)"))
    else:
        out.append(correlation_summary(a.target_corrs, a.target, "Correlations"))
    out.append(predictor_sentence(a))
    n, unit = units(a)
    if n < SMALL_N:
        out.append(f"With only n = {n} {unit}, the evidence is weak: only large effects can reach significance, "
                   "and bootstrap intervals from so few points understate the uncertainty; treat these findings "
                   "as preliminary.")
    return out
