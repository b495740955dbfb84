"""The feature sets an analysis compares: one per column role present, and roles together.

The main analysis and the untuned-vs-recovered comparison (:mod:`gradprune.analysis.recovered`) offer
every predictor the same sets, so that their nested R² values can be compared.
"""

from __future__ import annotations

from gradprune.prediction.columns import PROXY, RATIO, SETTING, STATISTIC, ColumnRoles
from gradprune.prediction.selection import FeatureSet

BOTH = f"{STATISTIC} + {SETTING}"
STATS_RATIO = f"{STATISTIC} + {RATIO}"  # what the statistics add to the ratio, where the ratio varies


def feature_sets(roles: ColumnRoles, usable: list[str]) -> tuple[list[FeatureSet], tuple[str, ...]]:
    """The feature sets compared (one per role present, and statistics + settings) and the names of those
    the exported model chooses from (settings and statistics; proxies only when nothing else exists)."""
    by_role = {r: tuple(f for f in cols if f in usable) for r, cols in roles.by_role().items()}
    by_role = {r: cols for r, cols in by_role.items() if cols}
    sets = [FeatureSet(r, by_role[r]) for r in (SETTING, STATISTIC, PROXY, RATIO) if r in by_role]
    if SETTING in by_role and STATISTIC in by_role:
        sets.append(FeatureSet(BOTH, by_role[STATISTIC] + by_role[SETTING]))
    if RATIO in by_role and STATISTIC in by_role:
        sets.append(FeatureSet(STATS_RATIO, by_role[STATISTIC] + by_role[RATIO]))
    default = tuple(fs.name for fs in sets if fs.name != PROXY) or tuple(fs.name for fs in sets)
    return sets, default
