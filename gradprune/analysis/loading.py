"""Reading a search CSV and keeping the rows that are full, successful results."""

from __future__ import annotations

import csv
import difflib
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from gradprune.errors import GradpruneError
from gradprune.prediction.columns import MIN_ROWS

_TRUE = {"true", "1", "1.0", "yes", "y", "t"}
_FALSE = {"false", "0", "0.0", "no", "n", "f", ""}
TRIAL_IDS = ("trial", "trial_id", "number")  # a trial's identity, when the CSV has one
MAX_LISTED = 8  # rows named in one note


@dataclass(frozen=True)
class SearchRows:
    """The usable rows of a search CSV, and how many rows were set aside and why."""

    path: Path
    rows: pd.DataFrame  # successful, fully evaluated rows with a numeric target
    total: int
    failed: int = 0
    not_evaluated: int = 0  # pruned-only rows (status == "pruned" or evaluated == False)
    missing_target: int = 0
    notes: list[str] = field(default_factory=list)
    duplicates: int = 0  # repeated trials, counted once
    truncated: int = 0  # a cut-off last row, left out
    row_numbers: list[int] = field(default_factory=list)  # 1-based data row of the CSV of each kept row


def require_file(p: Path) -> None:
    """Raise a GradpruneError unless ``p`` is an existing file."""
    if not p.exists():
        raise GradpruneError(f"{p}: file not found (expected a search_results.csv written by gradprune search)")
    if not p.is_file():
        raise GradpruneError(f"{p}: is not a file (expected a CSV file such as search_results.csv)")


def read_table(path: str | Path, min_columns: int = 2) -> pd.DataFrame:
    """Read a CSV file; a missing file or a file that is not a CSV table raises GradpruneError."""
    p = Path(path)
    require_file(p)
    try:
        df = pd.read_csv(p)
    except (UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError, ValueError) as exc:
        raise GradpruneError(
            f"{p}: is not a readable CSV table ({type(exc).__name__}); expected a comma-separated file "
            "with a header row, such as search_results.csv"
        ) from None
    if df.shape[1] < min_columns or df.shape[0] == 0:
        raise GradpruneError(
            f"{p}: is not a CSV table of runs (found {df.shape[1]} column(s), {df.shape[0]} row(s)); expected a "
            "comma-separated file with a header row and one row per trial, such as search_results.csv"
        )
    return df


def as_bool(col: pd.Series, name: str, path: Path) -> pd.Series:
    """Parse a True/False column written by pandas, a spreadsheet or by hand (missing = False)."""
    if pd.api.types.is_bool_dtype(col):
        return col.astype(bool)
    text = col.astype("string").str.strip().str.lower().fillna("")
    bad = sorted(set(text) - _TRUE - _FALSE)
    if bad:
        raise GradpruneError(f"{path}: column {name!r} should hold True/False, found {bad[:3]}")
    return text.isin(_TRUE)


def row_list(rows: list[int] | np.ndarray) -> str:
    """``3, 9 and 12`` (1-based data rows), at most MAX_LISTED named."""
    rows = [int(r) for r in rows]
    shown = ", ".join(map(str, rows[:MAX_LISTED]))
    return shown + (f" and {len(rows) - MAX_LISTED} more" if len(rows) > MAX_LISTED else "")


def truncated_last_row(path: Path, columns: int) -> int | None:
    """The 1-based data row number of a last row with fewer fields than the header (a file cut off while
    being written), else None."""
    try:
        text = path.read_text(encoding="utf-8")
    except (UnicodeDecodeError, OSError):
        return None
    records = [r for r in csv.reader(text.splitlines()) if r]
    if len(records) < 2 or len(records[-1]) >= columns:
        return None
    return len(records) - 1


def _infinite_to_missing(df: pd.DataFrame, notes: list[str]) -> None:
    """±inf (a diverged perplexity, a division by zero) is no measurement: missing, with a note."""
    for col in df.columns:
        values = pd.to_numeric(df[col], errors="coerce") if not pd.api.types.is_bool_dtype(df[col]) else None
        if values is None or not pd.api.types.is_numeric_dtype(values):
            continue
        bad = np.isinf(values.to_numpy(float))
        if bad.any():
            df[col] = df[col].mask(bad)
            notes.append(f"{col} is ±inf in row(s) {row_list(df.index[bad] + 1)}: treated as missing")


def _drop_repeats(df: pd.DataFrame, notes: list[str]) -> pd.DataFrame:
    """Repeated trials (the same trial id, or an identical row) are counted once: the first is kept."""
    repeat = df.duplicated(keep="first")
    for key in TRIAL_IDS:
        if key in df.columns and df[key].notna().any():
            same_id = df[key].notna() & df.duplicated(subset=[key], keep="first")
            differ = same_id & ~repeat
            if differ.any():
                notes.append(f"row(s) {row_list(df.index[differ] + 1)} repeat an earlier {key} with other "
                             "values: counted once (the first row is kept)")
            repeat |= same_id
            break
    exact = df.duplicated(keep="first")
    if exact.any():
        notes.append(f"row(s) {row_list(df.index[exact] + 1)} repeat an earlier row exactly: counted once")
    return df.loc[~repeat]


def numeric_columns(df: pd.DataFrame) -> list[str]:
    """Names of the columns that hold numbers (booleans included)."""
    return [c for c in df.columns if pd.api.types.is_numeric_dtype(df[c])]


def _check_target(df: pd.DataFrame, target: str, path: Path) -> None:
    if target in df.columns:
        if pd.to_numeric(df[target], errors="coerce").notna().sum() == 0:
            raise GradpruneError(f"{path}: target column {target!r} holds no numbers")
        return
    numeric = numeric_columns(df)
    close = difflib.get_close_matches(target, [str(c) for c in df.columns], n=3, cutoff=0.6)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    shown = ", ".join(numeric[:40]) + (" …" if len(numeric) > 40 else "")
    raise GradpruneError(f"{path}: no target column {target!r}.{hint} Numeric columns: {shown or '(none)'}")


_DECIMAL_COMMA = re.compile(r"^\s*[-+]?\d*,\d+\s*$")


def _check_target_cells(raw: pd.Series, y: pd.Series, used: pd.Series, target: str, path: Path,
                        notes: list[str]) -> None:
    """A target cell that holds text instead of a number is named, never dropped silently: a decimal comma
    (``0,7520``, a spreadsheet's locale) is an error, other text a note (the row is left out)."""
    text = used & y.isna() & raw.notna() & (raw.astype("string").str.strip().fillna("") != "")
    if not text.any():
        return
    cells = [(int(i) + 1, str(raw[i])) for i in raw.index[text]]
    commas = [(row, v) for row, v in cells if _DECIMAL_COMMA.match(v)]
    if commas:
        row, v = commas[0]
        more = f" (and {len(commas) - 1} more cell(s))" if len(commas) > 1 else ""
        raise GradpruneError(f"{path}: row {row}, column {target!r} holds {v!r}{more}: a decimal comma; write "
                             f"numbers with a decimal point ({v.strip().replace(',', '.')}), e.g. save the CSV "
                             "from the spreadsheet with '.' as its decimal separator")
    shown = ", ".join(f"row {row} ({v!r})" for row, v in cells[:MAX_LISTED])
    notes.append(f"{target} is not a number in {shown}{' …' if len(cells) > MAX_LISTED else ''}: "
                 "those rows are left out")


def load_search_rows(path: str | Path, target: str) -> SearchRows:
    """Read ``path`` and keep successful, fully evaluated rows whose ``target`` is a number.

    Raises GradpruneError when the file is unusable or fewer than MIN_ROWS rows remain.
    """
    p = Path(path)
    df = read_table(p)
    notes: list[str] = []
    total, truncated = len(df), 0
    if truncated_last_row(p, df.shape[1]) == len(df):
        notes.append(f"row {len(df)} (the last) has fewer fields than the header: the file was cut off; the row "
                     "is left out")
        df, truncated = df.iloc[:-1], 1
    _infinite_to_missing(df, notes)
    _check_target(df, target, p)
    before = len(df)
    df = _drop_repeats(df, notes)
    repeats = before - len(df)
    ok = pd.Series(True, index=df.index)
    if "success" in df.columns:
        ok &= as_bool(df["success"], "success", p)
    else:
        notes.append("no 'success' column: every row is treated as a successful run")
    status = df["status"].astype("string").str.strip().str.lower() if "status" in df.columns else None
    if status is not None:
        ok &= status.fillna("") != "failed"
    failed = int((~ok).sum())
    # pruned-only rows are real runs, but without the evaluation the target statistics need
    partial = pd.Series(False, index=df.index)
    if status is not None:
        partial |= status.fillna("") == "pruned"
    if "evaluated" in df.columns:
        partial |= ~as_bool(df["evaluated"], "evaluated", p)
    partial &= ok
    y = pd.to_numeric(df[target], errors="coerce")
    _check_target_cells(df[target], y, ok & ~partial, target, p, notes)
    missing = ok & ~partial & y.isna()
    keep = ok & ~partial & y.notna()
    numbers = [int(i) + 1 for i in df.index[keep]]
    rows = df.loc[keep].reset_index(drop=True)
    rows[target] = pd.to_numeric(rows[target])
    result = SearchRows(p, rows, total, failed, int(partial.sum()), int(missing.sum()), notes, repeats, truncated,
                        numbers)
    if len(rows) < MIN_ROWS:
        raise GradpruneError(
            f"{p}: only {len(rows)} successful, evaluated row(s) with a value of {target!r} "
            f"({describe_exclusions(result)}); the analysis needs at least {MIN_ROWS}"
        )
    return result


def describe_exclusions(r: SearchRows) -> str:
    """One phrase saying how many rows were used and why the others were set aside."""
    parts = [f"{len(r.rows)} of {r.total} rows used"]
    if r.failed:
        parts.append(f"{r.failed} failed")
    if r.not_evaluated:
        parts.append(f"{r.not_evaluated} pruned but not evaluated")
    if r.missing_target:
        parts.append(f"{r.missing_target} without a target value")
    if r.duplicates:
        parts.append(f"{r.duplicates} repeated trial(s) counted once")
    if r.truncated:
        parts.append(f"{r.truncated} truncated")
    return "; ".join(parts)
