"""The levels an analysis is split by (``--by pruning_ratio|model|<column>``).

A correlation across pruning ratios mostly measures the ratio: the more is removed, the lower the
accuracy and the larger most gradient statistics' spread. So a claim about a statistic must hold at a
fixed ratio. When the rows hold several pruning ratios and ``--by`` is not given, the analysis is split
by the ratio on its own (``--by none`` turns that off); this is said in the report.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

import numpy as np
import pandas as pd

from gradprune.analysis.sources import MODEL_COLUMN, SEARCH_COLUMN
from gradprune.errors import GradpruneError

NONE = "none"
RATIO = "pruning_ratio"
MODEL = "model"
# the target ratio a run was asked for comes first: the achieved ratio differs from trial to trial in
# its 4th decimal, which would make every row a level of its own
RATIO_SOURCES = ("target_ratio", "pruning.ratio", "pruning_ratio")
MODEL_SOURCES = (MODEL_COLUMN, "model.name_or_path", "base_model", SEARCH_COLUMN)
RATIO_DECIMALS = 2  # the achieved ratio (when it is the only ratio column) is rounded to this to form levels
MAX_LEVELS = 12  # a column with more distinct values is a measurement, not a grouping


@dataclass(frozen=True)
class Grouping:
    """The level of every used row (``labels``, text; missing where the row has none)."""

    by: str  # what was asked: "pruning_ratio", "model" or a column name
    column: str  # the column the levels come from
    labels: pd.Series
    automatic: bool = False  # chosen without --by, because the rows hold several pruning ratios
    note: str = ""

    @property
    def levels(self) -> list[str]:
        """The distinct levels, in sorted order (numerically where they are numbers)."""
        values = list(dict.fromkeys(self.labels.dropna()))
        try:
            return sorted(values, key=float)
        except ValueError:
            return sorted(values)

    @property
    def noun(self) -> str:
        """How the report names one level: ``pruning ratio``, ``model`` or ``value of <column>``."""
        return {RATIO: "pruning ratio", MODEL: "model"}.get(self.by, f"value of {self.by}")


def _label(v) -> str | None:
    if v is None or (isinstance(v, float) and not np.isfinite(v)) or pd.isna(v):
        return None
    if isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool):
        return f"{float(v):g}"
    return str(v)


def _numeric(col: pd.Series) -> pd.Series | None:
    values = pd.to_numeric(col, errors="coerce")
    return values if values.notna().sum() >= max(1, col.notna().sum() // 2) else None


def _ratio_labels(rows: pd.DataFrame) -> tuple[str, pd.Series] | None:
    for name in RATIO_SOURCES:
        if name not in rows.columns:
            continue
        values = _numeric(rows[name])
        if values is None or values.notna().sum() == 0:
            continue
        if name == "pruning_ratio":
            values = values.round(RATIO_DECIMALS)
        return name, values.map(_label)
    return None


def ratio_grouping(rows: pd.DataFrame) -> Grouping | None:
    """The automatic split: by the pruning ratio, where the rows hold at least two ratios."""
    found = _ratio_labels(rows)
    if found is None or found[1].dropna().nunique() < 2:
        return None
    column, labels = found
    levels = labels.dropna().nunique()
    note = (f"the rows hold {levels} pruning ratios ({column}), so every correlation and predictor is also "
            "judged within a ratio (a pooled correlation across ratios mostly measures the ratio); "
            "--by none turns this off")
    return Grouping(RATIO, column, labels, automatic=True, note=note)


def resolve_grouping(rows: pd.DataFrame, by: str | None, source: str) -> Grouping | None:
    """The grouping ``--by`` asks for (None: the automatic one; ``none``: no grouping)."""
    if by is None:
        return ratio_grouping(rows)
    if by == NONE:
        return None
    if by == RATIO:
        found = _ratio_labels(rows)
        if found is None:
            raise GradpruneError(f"--by {RATIO}: {source} has none of the columns {', '.join(RATIO_SOURCES)}")
        return _checked(Grouping(RATIO, found[0], found[1]), source)
    if by == MODEL:
        column = next((c for c in MODEL_SOURCES if c in rows.columns), None)
        if column is None:
            raise GradpruneError(f"--by {MODEL}: {source} has no model column ({', '.join(MODEL_SOURCES[:3])}) "
                                 "and no search.json / trials/*/run.json beside the CSV that names its model; "
                                 "give one CSV per model, each in its search's folder")
        note = ("each CSV is taken as one model (no model column, no recipes beside the CSVs)"
                if column == SEARCH_COLUMN else "")
        return _checked(Grouping(MODEL, column, rows[column].map(_label), note=note), source)
    if by not in rows.columns:
        close = difflib.get_close_matches(by, [str(c) for c in rows.columns], n=3, cutoff=0.6)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise GradpruneError(f"--by {by}: {source} has no column {by!r}.{hint} Expected {RATIO}, {MODEL}, {NONE} "
                             "or a column with a few levels (a grid key)")
    return _checked(Grouping(by, by, rows[by].map(_label)), source)


def _checked(g: Grouping, source: str) -> Grouping:
    n = g.labels.dropna().nunique()
    if n > MAX_LEVELS:
        raise GradpruneError(f"--by {g.by}: column {g.column!r} of {source} has {n} distinct values; --by expects "
                             f"a column with at most {MAX_LEVELS} levels (a pruning ratio, a model, a grid key)")
    if n == 0:
        raise GradpruneError(f"--by {g.by}: column {g.column!r} of {source} holds no value in the used rows")
    return g
