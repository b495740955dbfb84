"""Instruction data sets (records of instruction, input, output) read through a named prompt template.

``path`` is a hub data set (``yahma/alpaca-cleaned``, read with ``datasets``), a local directory in the hub
layout, or a local ``.json`` (a list of records, as ``alpaca_data_cleaned.json``) or ``.jsonl`` file (one
record per line). :meth:`InstructionSet.records` yields the records in file order, checked against the
template's fields; ``documents()`` yields each record's full text (prompt + response), so the same set can
also serve as calibration text.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from gradprune.data.sources import TextSource, is_offline_error, offline_hint
from gradprune.data.templates import TEMPLATES, PromptTemplate, get_template
from gradprune.errors import DataError

_LOCAL_SUFFIXES = (".json", ".jsonl")


class InstructionSetParams(BaseModel):
    """Where the records are, which template reads them, and how many to use."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    path: str = Field(min_length=1)
    template: str = "alpaca"
    split: str = "train"
    config: str | None = None
    revision: str | None = None
    data_files: str | list[str] | dict[str, str | list[str]] | None = None
    #: the first this many records (in file order); None: all
    max_examples: int | None = Field(None, gt=0)

    @field_validator("template")
    @classmethod
    def _known(cls, v: str) -> str:
        if v not in TEMPLATES:
            raise ValueError(f"unknown prompt template; known: {', '.join(TEMPLATES)}")
        return v


class InstructionSet(TextSource):
    """Instruction records (a hub set such as yahma/alpaca-cleaned, or a local JSON/JSONL file) in a
    named prompt template."""

    Params = InstructionSetParams

    @property
    def template(self) -> PromptTemplate:
        """The prompt template the records are read with."""
        return get_template(self.params.template)

    def records(self) -> Iterator[dict[str, Any]]:
        """The records in file order, each checked to hold the template's required fields as text."""
        p, template = self.params, self.template
        rows = self._local_rows(Path(p.path)) if self._is_local_file() else self._hub_rows()
        n = 0
        try:
            for where, row in rows:
                if p.max_examples is not None and n >= p.max_examples:
                    return
                missing = template.missing(row)
                if missing:
                    have = ", ".join(map(str, row)) if isinstance(row, dict) else type(row).__name__
                    raise DataError(f"{self.key}: {where} has no text field {', '.join(map(repr, missing))}, which "
                                    f"the {template.name!r} template needs ({', '.join(template.required)}; "
                                    f"{template.optional!r} optional); the record has: {have or 'nothing'}")
                n += 1
                yield row
        finally:
            rows.close()

    def documents(self) -> Iterator[str]:
        """Each record's prompt followed by its response."""
        template = self.template
        for record in self.records():
            yield template.full_text(record)

    def describe(self) -> str:
        p = self.params
        limit = f", first {p.max_examples}" if p.max_examples else ""
        return f"instructions {p.path} ({p.template} template{limit})"

    def _is_local_file(self) -> bool:
        path = Path(self.params.path)
        return path.suffix in _LOCAL_SUFFIXES or path.is_file()

    def _local_rows(self, path: Path) -> Iterator[tuple[str, Any]]:
        if not path.is_file():
            what = "a directory" if path.is_dir() else "missing"
            raise DataError(f"{self.key}.path: {str(path)!r} is {what}; expected a .json or .jsonl file of "
                            f"records, or a hub data set id")
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise DataError(f"{self.key}.path: cannot read {str(path)!r}: {exc}") from None
        if path.suffix == ".jsonl":
            for i, line in enumerate(text.splitlines(), 1):
                if line.strip():
                    yield f"{path}:{i}", _json(line, f"{path}:{i}")
            return
        data = _json(text, str(path))
        if not isinstance(data, list):
            raise DataError(f"{path}: expected a JSON list of records (or a .jsonl file), got {type(data).__name__}")
        for i, row in enumerate(data):
            yield f"{path}, record {i}", row

    def _hub_rows(self) -> Iterator[tuple[str, Any]]:
        p = self.params
        kwargs = {k: v for k, v in (("data_files", p.data_files), ("revision", p.revision)) if v is not None}
        try:
            import datasets

            ds = datasets.load_dataset(p.path, p.config, split=p.split, **kwargs)
        except Exception as exc:  # datasets raises many types (ConnectionError, FileNotFoundError, ValueError, ...)
            msg = f"{self.key}: cannot load {self.describe()}: {type(exc).__name__}: {str(exc)[:300]}"
            if is_offline_error(exc):
                msg += ". " + offline_hint(
                    f"point {self.key}.path at a local .json/.jsonl file of records",
                    f"hf download {p.path} --repo-type dataset --local-dir DIR, then set {self.key}.path to "
                    f"the records file in DIR")
            raise DataError(msg) from None
        for i, row in enumerate(ds):
            yield f"{p.path} row {i}", row


def _json(text: str, where: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"{where}: not valid JSON ({exc.msg}, line {exc.lineno})") from None
