"""The original tool's hypotheses, as data, and the report's verdict on each.

:data:`HYPOTHESES` is the table: one :class:`Hypothesis` per claim, in the order the report numbers
them. A new claim is a new row; the code below only knows how a correlation claim and an R² claim are
tested.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from gradprune.analysis.correlations import ALPHA, Correlation, strength
from gradprune.analysis.document import fmt_ci, fmt_r, p_is
from gradprune.analysis.findings import SMALL_N, permutation_phrase
from gradprune.analysis.pipeline import EXPORTED, Analysis
from gradprune.original_names import setting_columns
from gradprune.prediction.columns import target_family


@dataclass(frozen=True)
class Hypothesis:
    """One claim: a column's correlation with accuracy, or (``r2`` set) that some predictor reaches an R².

    ``claim`` is shown with ``{t}`` as the target and ``{r2}`` as ``r2``.
    """

    claim: str
    #: the columns that carry the quantity, tested as the first one the CSV has (a correlation claim)
    columns: tuple[str, ...] = ()
    #: the expected sign of the correlation with accuracy (reversed for a perplexity target)
    sign: int = -1
    #: the claim says "strongly": a relation of the right sign below |ρ| = 0.5 is only partly supported
    strong: bool = False
    #: also show the target's mean per level of the column (a setting with few values)
    level_means: bool = False
    #: a prediction claim: some predictor reaches R² above this out of sample
    r2: float | None = None


HYPOTHESES: tuple[Hypothesis, ...] = (
    Hypothesis("grad_norm_ratio is strongly negatively correlated with {t}", ("grad_norm_ratio",), strong=True),
    Hypothesis("shorter taylor_seq_len gives higher {t}", setting_columns("calibration.seq_len"), level_means=True),
    Hypothesis("extreme_pruning_layers is negatively correlated with {t}", ("extreme_pruning_layers",)),
    Hypothesis("a predictor reaches R² > {r2}", r2=0.7),
)


def hypotheses(a: Analysis, table: Sequence[Hypothesis] = HYPOTHESES) -> list[str]:
    """Every hypothesis of ``table``, numbered, with a verdict and its numbers."""
    t = a.target
    sign_flip = -1 if target_family(t) == "ppl" else 1  # lower perplexity is better: expected signs reverse
    out = []
    if t != "acc_mean":
        reversed_ = " with the expected signs reversed (lower perplexity is better)" if sign_flip < 0 else ""
        out.append(f"The hypotheses are about acc_mean; they are tested here on the target {t}{reversed_}.")
    for k, h in enumerate(table, start=1):
        claim = h.claim.format(t=t, r2=h.r2)
        verdict = r2_verdict(a, h.r2) if h.r2 is not None else _correlation_line(a, h, sign_flip)
        out.append(f"({k}) {claim}: {verdict}")
    return out


def _correlation_line(a: Analysis, h: Hypothesis, sign_flip: int) -> str:
    corrs = a.replicates.between if a.replicates is not None else a.target_corrs
    if a.within is not None:  # a claim must hold at a fixed pruning ratio (model, level)
        corrs = a.within.pooled
    # a column grouped with a near-duplicate is tested as the group's kept column
    names = tuple(dict.fromkeys(x for n in h.columns for x in (n, a.roles.near_duplicates.get(n, ("",))[0]) if x))
    c = _find(corrs, names) or _find(a.target_corrs, names)
    verdict = correlation_verdict(c, h.sign * sign_flip, h.strong, a.target)
    if c is None or not c.defined:
        return verdict
    extra = _level_means(a, c.x) if h.level_means else ""
    scope = (f" Tested on per-config means ({a.replicates.target.groups} configs), since replicates of one "
             "config are not independent." if a.replicates is not None else "")
    if a.within is not None:
        noun = a.within.grouping.noun
        scope = (f" Tested within a {noun} ({noun} as a covariate, {len(a.within.levels)} levels), since a "
                 f"correlation pooled over {noun}s mostly measures the {noun}.")
    return f"{verdict}{extra}{scope}"


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


def r2_verdict(a: Analysis, claim: float) -> str:
    """Whether the predictor reaches R² > ``claim`` out of sample: nested cross-validated R², permutation p."""
    rs, scheme = a.role_scores[EXPORTED], a.comparison.scheme.name
    best = rs.best
    numbers = (f"best predictor {best.label}: R² = {best.r2:.4f} in sample, {best.r2_cv:.4f} cross-validated "
               f"({scheme}), nested cross-validated R² = {rs.r2_cv_nested:.4f}, "
               f"{permutation_phrase(rs, a.replicates is not None)}")
    if rs.r2_cv_nested > claim and rs.p_value < ALPHA:
        return f"SUPPORTED: {numbers}."
    top_in = max(a.comparison.scores, key=lambda s: s.r2)
    if top_in.r2 > claim:
        return (f"NOT SUPPORTED out of sample: {top_in.label} reaches R² = {top_in.r2:.4f} in sample, but the "
                f"choice among the candidates reaches only {rs.r2_cv_nested:.4f} nested cross-validated; the "
                f"in-sample fit is optimistic ({numbers}).")
    return f"NOT SUPPORTED: {numbers}."
