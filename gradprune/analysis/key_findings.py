"""The report's plain-language key findings: the sentences of :mod:`.findings` (all rows, replicates) and
:mod:`.within_findings` (per level, leave one model out), most important first."""

from __future__ import annotations

from gradprune.analysis.findings import (
    SMALL_N,
    best_setting_sentence,
    correlation_summary,
    monotone_sentence,
    predictor_sentence,
    role_sentence,
    setting_trends,
    units,
    variance_sentence,
)
from gradprune.analysis.loading import describe_exclusions
from gradprune.analysis.pipeline import Analysis
from gradprune.analysis.within_findings import (
    lomo_sentence,
    pooled_caveats,
    within_correlation_summary,
    within_predictor_sentence,
)


def key_findings(a: Analysis) -> list[str]:
    """The report's opening bullets, most important first."""
    out = [" ".join([f"Data: {describe_exclusions(a.loaded)}; target {a.target}.", *(f"Note: {n}." for n in a.notes)])]
    if a.replicates is not None:
        out.append("Replicates: " + variance_sentence(a.replicates.target, a.target, setting_trends(a)))
        rep = a.replicates
        if a.within is None:  # split by a grouping, the pooled per-config correlations are not the finding
            out.append(correlation_summary(rep.between, a.target, f"Across settings (per-config means, "
                                                                   f"n = {rep.target.groups} configs)"))
        out.append(correlation_summary(rep.within, a.target, "Within settings (each replicate against its "
                                                              "config's mean: seed-to-seed differences)"))
        if (best := best_setting_sentence(a)) is not None:
            out.append(best)
    elif a.within is None:
        out.append(correlation_summary(a.target_corrs, a.target, "Correlations"))
    if a.within is not None:
        out += [within_correlation_summary(a), *pooled_caveats(a)]
    else:
        mono = monotone_sentence(a.replicates.between if a.replicates is not None else a.target_corrs, a.target)
        if mono:
            out.append(mono)
    out.append(predictor_sentence(a))
    if len(a.role_scores) > 2:
        out.append(role_sentence(a))
    out += [s for s in (within_predictor_sentence(a) if a.within is not None else None, lomo_sentence(a)) if s]
    n, unit = units(a)
    if n < SMALL_N:
        out.append(f"With only n = {n} {unit}, the evidence is weak: only large effects can reach significance, "
                   "and bootstrap intervals from so few points understate the uncertainty; treat these findings "
                   "as preliminary.")
    return out
