"""Several search CSVs in one analysis, and what each search ran: its ``search.json`` and the
``trials/*/run.json`` of its trials (the resolved recipes, the versions, the evaluation protocol).

Rows of several CSVs are stacked; each row keeps where it came from (``search``, bookkeeping) and, when
the CSV has no model column, the model its recipes name (``model``), so ``--by model`` and the
leave-one-model-out check work across searches of different models. Config ids are made unique per CSV
(replicates of one search's grid point never pair with another search's).
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pandas as pd

from gradprune.analysis.loading import SearchRows

SEARCH_COLUMN = "search"  # which CSV a row came from (only when several are combined)
MODEL_COLUMN = "model"
MAX_RUNS = 400  # run.json files read per search (the protocol is the same for every trial)


@dataclass(frozen=True)
class Provenance:
    """What a search CSV's folder holds about how its rows were made (empty where nothing is there)."""

    csv: Path
    search: dict[str, Any] | None = None  # search.json
    runs: list[dict[str, Any]] = field(default_factory=list)  # run.json of the trials (without per-layer data)

    @property
    def recipes(self) -> list[dict[str, Any]]:
        """The resolved recipe of every trial read."""
        return [r["recipe"] for r in self.runs if isinstance(r.get("recipe"), dict)]

    def model_name(self) -> str | None:
        """The one model every recipe names, else None."""
        names = {str(r.get("model", {}).get("name_or_path")) for r in self.recipes}
        return names.pop() if len(names) == 1 else None


def _json(path: Path) -> dict[str, Any] | None:
    with contextlib.suppress(OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        data = json.loads(path.read_text(encoding="utf-8"))
        return data if isinstance(data, dict) else None
    return None


def _trial_number(path: Path) -> int:
    try:
        return int(path.parent.name.removeprefix("trial_"))
    except ValueError:
        return -1


def read_provenance(csv: Path) -> Provenance:
    """``search.json`` and the trials' ``run.json`` beside ``csv`` (unreadable files are skipped)."""
    folder = Path(csv).parent
    runs = []
    for path in sorted(folder.glob("trials/trial_*/run.json"), key=_trial_number)[:MAX_RUNS]:
        data = _json(path)
        if data is not None:
            data.pop("stats", None)  # per-layer statistics: large, and the CSV holds their summaries
            runs.append(data)
    return Provenance(Path(csv), _json(folder / "search.json"), runs)


def _labels(paths: list[Path]) -> list[str]:
    """Short distinct names of the CSVs: their folder names, else their paths."""
    names = [p.parent.name or p.stem for p in paths]
    return names if len(set(names)) == len(names) else [str(p) for p in paths]


def combine(loaded: list[SearchRows], provenance: list[Provenance]) -> SearchRows:
    """One SearchRows of several CSVs' rows (a single CSV comes back unchanged)."""
    if len(loaded) == 1:
        return loaded[0]
    frames = []
    for label, rows, prov in zip(_labels([r.path for r in loaded]), loaded, provenance, strict=True):
        df = rows.rows.copy()
        df[SEARCH_COLUMN] = label
        if MODEL_COLUMN not in df.columns and (name := prov.model_name()) is not None:
            df[MODEL_COLUMN] = name
        if "config_id" in df.columns:
            df["config_id"] = [None if pd.isna(c) else f"{label}:{c}" for c in df["config_id"]]
        frames.append(df)
    rows = pd.concat(frames, ignore_index=True, sort=False)
    notes = [f"{r.path}: {n}" for r in loaded for n in r.notes]
    first = loaded[0]
    return replace(first, rows=rows, total=sum(r.total for r in loaded), failed=sum(r.failed for r in loaded),
                   not_evaluated=sum(r.not_evaluated for r in loaded),
                   missing_target=sum(r.missing_target for r in loaded), notes=notes,
                   duplicates=sum(r.duplicates for r in loaded), truncated=sum(r.truncated for r in loaded),
                   row_numbers=[n for r in loaded for n in r.row_numbers])
