"""Text sources for calibration: the embedded corpus, a local .txt/.jsonl file, a datasets dataset.

A source yields documents (strings); ``windows.draw_windows`` turns them into token windows.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from gradprune.errors import DataError
from gradprune.registry import NoParams


class TextSource:
    """Base class: ``documents()`` yields the source's documents in a fixed order."""

    Params: type[BaseModel] = NoParams

    def __init__(self, params: BaseModel | None = None) -> None:
        self.params = params if params is not None else self.Params()

    def documents(self) -> Iterator[str]:
        raise NotImplementedError

    def describe(self) -> str:
        """One line naming the source, recorded with the calibration draws."""
        return type(self).__name__


class EmbeddedCorpus(TextSource):
    """The calibration corpus shipped in ``gradprune/assets`` (generated text, offline)."""

    def documents(self) -> Iterator[str]:
        from gradprune import assets

        path = Path(assets.CORPUS_PATH)
        if not path.exists():
            raise DataError(f"the embedded corpus {path} is missing; run `make assets` to generate it")
        yield from _split_paragraphs(path.read_text(encoding="utf-8"))

    def describe(self) -> str:
        return "embedded corpus"


class TextFileParams(BaseModel):
    """A local file: plain text (documents separated by blank lines) or JSON lines with a text field."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    path: str
    field: str = "text"


class TextFile(TextSource):
    """A local .txt (blank-line separated documents) or .jsonl file (one document per line)."""

    Params = TextFileParams

    def documents(self) -> Iterator[str]:
        path = Path(self.params.path)
        if not path.is_file():
            what = "a directory" if path.is_dir() else "missing"
            raise DataError(f"calibration.dataset.path: {str(path)!r} is {what}; expected a .txt or .jsonl file")
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise DataError(f"calibration.dataset.path: cannot read {str(path)!r}: {exc}") from None
        if path.suffix in (".jsonl", ".json"):
            yield from self._jsonl(text, path)
        else:
            yield from _split_paragraphs(text)

    def _jsonl(self, text: str, path: Path) -> Iterator[str]:
        f = self.params.field
        for i, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}:{i}: not valid JSON ({exc.msg})") from None
            if not isinstance(row, dict) or f not in row:
                raise DataError(f"{path}:{i}: no field {f!r} (set calibration.dataset.field)")
            yield str(row[f])

    def describe(self) -> str:
        return f"text file {self.params.path}"


class HFDatasetParams(BaseModel):
    """A Hugging Face ``datasets`` dataset (real runs; needs the hub or a local cache)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    path: str = "wikitext"
    config: str | None = None
    split: str = "train"
    field: str = "text"
    max_documents: int | None = Field(None, gt=0)


class HFDataset(TextSource):
    """Documents from ``datasets.load_dataset(path, config, split)[field]`` (e.g. bookcorpus, c4)."""

    Params = HFDatasetParams

    def documents(self) -> Iterator[str]:
        p = self.params
        try:
            import datasets

            ds = datasets.load_dataset(p.path, p.config, split=p.split)
        except Exception as exc:
            raise DataError(
                f"calibration.dataset: cannot load datasets {p.path!r} (config {p.config!r}, split {p.split!r}): "
                f"{type(exc).__name__}: {str(exc)[:300]}. Offline (HF_DATASETS_OFFLINE=1) only cached data sets load."
            ) from None
        if p.field not in ds.column_names:
            raise DataError(f"calibration.dataset.field: {p.field!r} is not a column of {p.path}; "
                            f"columns: {', '.join(ds.column_names)}")
        for i, text in enumerate(ds[p.field]):
            if p.max_documents is not None and i >= p.max_documents:
                break
            if text and text.strip():
                yield text

    def describe(self) -> str:
        p = self.params
        return f"datasets {p.path}" + (f"/{p.config}" if p.config else "") + f" [{p.split}]"


def _split_paragraphs(text: str) -> Iterator[str]:
    for block in text.split("\n\n"):
        if block.strip():
            yield block.strip()
