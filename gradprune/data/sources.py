"""Text sources for calibration: the embedded corpus, a local .txt/.jsonl file, a datasets dataset.

A source yields documents (strings) lazily, in a fixed order; ``windows.draw_windows`` reads only as
many as its windows need. ``next(iter(source.documents()))`` is therefore a cheap check that a source
works: it opens the data (a DataError naming the cause if it cannot) and reads one document.

The ``hf`` source takes what ``datasets.load_dataset`` takes, e.g. the C4 shard Wanda and SparseGPT
calibrate on: ``{name: hf, path: allenai/c4, data_files: {train: en/c4-train.00000-of-01024.json.gz},
streaming: true}``. Streaming reads the shard from the hub only as far as the draw needs, and caches
nothing. For an offline machine, download the files in their hub layout
(``hf download allenai/c4 --repo-type dataset --include en/c4-train.00000-of-01024.json.gz --local-dir DIR``)
and set ``path: DIR``, keeping ``data_files``: a local directory loads, and streams, like the hub repo.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator, Sequence
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from gradprune.errors import DataError
from gradprune.registry import NoParams


class TextSource:
    """Base class: ``documents()`` yields the source's documents in a fixed order."""

    Params: type[BaseModel] = NoParams
    #: the recipe section the source was built from, named in its error messages
    key: str = "calibration.dataset"

    def __init__(self, params: BaseModel | None = None) -> None:
        self.params = params if params is not None else self.Params()

    def documents(self) -> Iterator[str]:
        """The documents, lazily: a consumer may stop early, and the first one should come fast."""
        raise NotImplementedError

    def describe(self) -> str:
        """One line naming the source, recorded with the calibration draws."""
        return type(self).__name__

    def indexed(self) -> Sequence[str] | None:
        """The documents with random access (``len`` and ``[i]``; an entry may be blank), or None for a
        stream. With it, a draw visits documents of the *whole* source in a seeded order, so two seeds
        draw from different documents; a stream is drawn from its first documents only."""
        return None


class EmbeddedCorpus(TextSource):
    """The calibration corpus shipped in ``gradprune/assets`` (generated text, offline)."""

    def documents(self) -> Iterator[str]:
        from gradprune import assets

        path = Path(assets.CORPUS_PATH)
        if not path.exists():
            raise DataError(f"the embedded corpus {path} is missing; run `make assets` to generate it")
        yield from _paragraphs(path, "the embedded corpus")

    def describe(self) -> str:
        return "embedded corpus"

    def indexed(self) -> Sequence[str]:
        """Small and local: read whole."""
        return list(self.documents())


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
            raise DataError(f"{self.key}.path: {str(path)!r} is {what}{relative_note(self.params.path)}; "
                            "expected a .txt or .jsonl file")
        if path.suffix in (".jsonl", ".json"):
            yield from self._jsonl(path)
        else:
            yield from _paragraphs(path, f"{self.key}.path")

    def _jsonl(self, path: Path) -> Iterator[str]:
        f = self.params.field
        for i, line in enumerate(_lines(path, f"{self.key}.path"), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}:{i}: not valid JSON ({exc.msg})") from None
            if not isinstance(row, dict) or f not in row:
                raise DataError(f"{path}:{i}: no field {f!r} (set {self.key}.field)")
            yield str(row[f])

    def describe(self) -> str:
        return f"text file {self.params.path}"

    def indexed(self) -> Sequence[str]:
        """A local file: read whole (documents are strings; the file is read once)."""
        return list(self.documents())


class HFDatasetParams(BaseModel):
    """A ``datasets`` data set: ``load_dataset(path, config, data_files=, revision=, split=, streaming=)``.

    ``path`` is a hub repo id, a local directory (e.g. a hub repo downloaded with ``--local-dir``) or a
    builder (``json``, ``parquet``, ``text``, ``csv``) with ``data_files``; rows are read in file order.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    path: str = Field(min_length=1)
    config: str | None = None
    data_files: str | list[str] | dict[str, str | list[str]] | None = None
    revision: str | None = None
    split: str = "train"
    field: str = "text"
    #: read rows from the files as they are needed instead of downloading and preparing the whole split
    streaming: bool = False
    max_documents: int | None = Field(None, gt=0)


class HFDataset(TextSource):
    """Documents from a ``datasets`` data set's text field, read lazily (e.g. a C4 shard, bookcorpus)."""

    Params = HFDatasetParams

    def documents(self) -> Iterator[str]:
        """The non-empty ``field`` of each row in order; rows are read only as far as the consumer goes."""
        p = self.params
        ds = self._load()
        # a streamed JSON set knows its columns only once a row is read (column_names is None until then)
        if ds.column_names is not None and p.field not in ds.column_names:
            raise self._no_field(ds.column_names)
        rows = iter(ds)
        n = 0
        try:
            while p.max_documents is None or n < p.max_documents:
                try:
                    row = next(rows)
                except StopIteration:
                    return
                except Exception as exc:  # a stream or a shard can fail mid-way (network, truncated gzip)
                    raise DataError(f"{self.key}: reading {self.describe()} failed after {n} rows: "
                                    f"{type(exc).__name__}: {str(exc)[:300]}") from None
                if n == 0 and p.field not in row:
                    raise self._no_field(list(row))
                n += 1
                text = row.get(p.field)
                if isinstance(text, str) and text.strip():
                    yield text
        finally:
            close = getattr(rows, "close", None)  # a stream holds its file or connection open until closed
            if close is not None:
                close()

    def indexed(self) -> Sequence[str] | None:
        """Random access into a prepared (non-streaming) data set: rows are read only when drawn."""
        p = self.params
        if p.streaming:
            return None
        ds = self._load()
        if p.field not in ds.column_names:
            raise self._no_field(ds.column_names)
        n = ds.num_rows if p.max_documents is None else min(ds.num_rows, p.max_documents)
        return _Column(ds, p.field, n)

    def _load(self):
        p = self.params
        kwargs = {"data_files": p.data_files, "revision": p.revision}
        try:
            import datasets

            return datasets.load_dataset(p.path, p.config, split=p.split, streaming=p.streaming,
                                         **{k: v for k, v in kwargs.items() if v is not None})
        except Exception as exc:  # datasets raises many types (ConnectionError, FileNotFoundError, ValueError, ...)
            raise DataError(self._load_error(exc)) from None

    def _load_error(self, exc: Exception) -> str:
        p = self.params
        msg = f"{self.key}: cannot load {self.describe()}: {type(exc).__name__}: {str(exc)[:300]}"
        if "Dataset scripts are no longer supported" in str(exc):
            return (msg + ". datasets >= 4 runs no loading scripts: load the repo's parquet export instead "
                    "(revision: refs/convert/parquet, data_files: <config>/<split>/*.parquet)")
        if not is_offline_error(exc):
            return msg
        fetch = None
        # datasets' own cache serves a hub data set offline, but not a streamed one, nor (huggingface/datasets
        # #7551) one loaded with data_files: for those, files downloaded in the hub layout are the way
        if _looks_like_hub_id(p.path) and (p.streaming or p.data_files is not None):
            include = "".join(f" --include {f}" for f in _file_patterns(p.data_files))
            rev = f" --revision {p.revision}" if p.revision else ""
            fetch = (f"hf download {p.path} --repo-type dataset{rev}{include} --local-dir DIR, then set "
                     f"{self.key}.path to DIR" + (" (data_files unchanged)" if p.data_files else ""))
        streaming = " (streaming reads the hub at run time and caches nothing)" if p.streaming else ""
        return (f"{msg}{streaming}. " + offline_hint(
            "calibrate on local files (name: text_file, or name: hf with path: json and data_files)", fetch))

    def _no_field(self, columns: list[str]) -> DataError:
        return DataError(f"{self.key}.field: {self.params.field!r} is not a column of "
                         f"{self.describe()}; columns: {', '.join(columns)}")

    def describe(self) -> str:
        p = self.params
        parts = [f"datasets {p.path}" + (f"/{p.config}" if p.config else "")]
        if p.revision:
            parts.append(f"revision={p.revision}")
        if p.data_files is not None:
            parts.append(f"data_files={p.data_files}")
        parts.append(f"[{p.split}]" + (" streaming" if p.streaming else ""))
        return " ".join(parts)


class _Column(Sequence):
    """One text column of a ``datasets.Dataset`` as a lazy sequence of strings (blank for non-strings)."""

    def __init__(self, ds, field: str, n: int) -> None:
        self.ds, self.field, self.n = ds, field, n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i):  # noqa: D105 - a row's text
        text = self.ds[int(i)][self.field]
        return text if isinstance(text, str) else ""


def _file_patterns(data_files: str | list | dict | None) -> list[str]:
    """Every file pattern of a ``data_files`` value, in order."""
    if data_files is None:
        return []
    if isinstance(data_files, str):
        return [data_files]
    if isinstance(data_files, dict):
        return [f for v in data_files.values() for f in _file_patterns(v)]
    return list(data_files)


def _looks_like_hub_id(path: str) -> bool:
    """``owner/name`` or ``name`` that is neither a local path nor a builder such as ``json``."""
    from datasets.packaged_modules import _PACKAGED_DATASETS_MODULES

    return path not in _PACKAGED_DATASETS_MODULES and not os.path.exists(path) and path.count("/") <= 1 \
        and not os.path.isabs(path)


def _lines(path: Path, key: str) -> Iterator[str]:
    """The file's lines, read as they are consumed; unreadable is a DataError naming ``key``."""
    try:
        with path.open(encoding="utf-8") as fh:
            yield from fh
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{key}: cannot read {str(path)!r}: {exc}") from None


def _paragraphs(path: Path, key: str) -> Iterator[str]:
    """The file's blank-line separated blocks, stripped, empty ones dropped (``text.split("\\n\\n")``, lazily)."""
    block: list[str] = []
    for line in _lines(path, key):
        if line in ("\n", ""):
            if "".join(block).strip():
                yield "".join(block).strip()
            block = []
        else:
            block.append(line)
    if "".join(block).strip():
        yield "".join(block).strip()


# Telling an unreachable or uncached hub data set apart from other load failures (calibration data here,
# perplexity texts and lm-eval task data in gradprune.eval). Only a failure that is really about the
# network (offline mode on, the hub unreachable, the file not in the local cache) gets the offline hint;
# a missing repo, a wrong file name or a broken file is reported as what it is, since "run once with
# network access" would not fix it.
#
# Exception classes (matched by name, so this module imports neither datasets nor huggingface_hub) that
# mean "could not reach the hub, and the data is not cached": datasets raises ConnectionError when offline,
# huggingface_hub raises LocalEntryNotFoundError / OfflineModeIsEnabled, httpx ConnectError / timeouts.
_OFFLINE_ERRORS = frozenset({"ConnectionError", "TimeoutError", "OfflineModeIsEnabled", "LocalEntryNotFoundError",
                             "ConnectError", "TimeoutException"})
_FLAGS = ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE")


def is_offline_error(exc: BaseException) -> bool:
    """True when ``exc`` (or an exception it was raised from) says the hub is unreachable and nothing is cached."""
    seen: set[int] = set()
    pending: list[BaseException] = [exc]
    while pending:
        e = pending.pop()
        if id(e) in seen:
            continue
        seen.add(id(e))
        if any(cls.__name__ in _OFFLINE_ERRORS for cls in type(e).__mro__):
            return True
        pending.extend(c for c in (e.__cause__, e.__context__) if c is not None)
    return False


def relative_note(path: str | Path) -> str:
    """`` (a relative path, read from the working directory /x)`` for a relative path, else ``""``: a path
    that exists from one folder and not from another reads as missing without it."""
    p = str(path)
    if Path(p).is_absolute() or p.startswith("~"):
        return ""
    return f" (a relative path, read from the working directory {os.getcwd()})"


# an offline hint starts with this; several problems with the same hint state it once (dedupe_hints)
HINT_START = "It is not in the local cache and "


_TASK_PROBLEM = re.compile(r"^eval\.tasks: task ('[^']+') (.+)$", re.S)


def dedupe_hints(problems: list[str]) -> list[str]:
    """``problems`` with repeated advice given once: tasks that fail the same way are one problem naming
    them all, and a repeated offline hint is kept only on the last problem that carries it (five tasks
    that cannot be loaded offline give the same advice once, not five times)."""
    merged: dict[str, list[str]] = {}
    for p in problems:
        m = _TASK_PROBLEM.match(p)
        merged.setdefault(m.group(2) if m else p, []).append(m.group(1) if m else "")
    problems = [f"eval.tasks: task{'s' if len(names) > 1 else ''} {', '.join(names)} {rest}" if names[0] else rest
                for rest, names in merged.items()]
    hints = [p[p.index(HINT_START):] if HINT_START in p else None for p in problems]
    out = []
    for i, (problem, hint) in enumerate(zip(problems, hints, strict=True)):
        if hint is not None and hint in hints[i + 1:]:
            problem = problem[: problem.index(HINT_START)].rstrip(" .") + " (see below)"
        out.append(problem)
    return out


def offline_hint(alternative: str, fetch: str | None = None) -> str:
    """The hint for an offline failure: why (the flags set, or no network), how to cache it (``fetch``, a
    command), or what to use instead (``alternative``)."""
    flags = [f"{k}={os.environ[k]}" for k in _FLAGS if os.environ.get(k) not in (None, "", "0")]
    why = f"offline mode is on ({', '.join(flags)})" if flags else "the hub could not be reached"
    how = f"fetch it once with network access: {fetch}" if fetch else \
        "run once with network access (offline flags unset) to cache it"
    return f"{HINT_START}{why}: {how}; or {alternative}"
