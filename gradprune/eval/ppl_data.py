"""Perplexity texts: WikiText2 and PTB from the hub's parquet files, the embedded text, or a local text file.

Each source gives one long string, built the way the pruning papers build it: every WikiText2 test
row (blank ones included) joined with ``"\\n\\n"`` (GPTQ, SparseGPT, Wanda, LLM-Pruner), PTB validation
sentences joined with ``" "`` (GPTQ, SparseGPT; LLM-Pruner joins them with ``"\\n\\n"``, a different text:
PTB numbers compare only under the same joiner).

The hub data sets are read from their parquet files, which ``datasets`` >= 4 still loads (PTB's hub
repo is a script data set it refuses; its parquet export lives on the ``refs/convert/parquet`` branch):

- ``wikitext2``: ``Salesforce/wikitext`` (``main``), ``wikitext-2-raw-v1/test-00000-of-00001.parquet``, field ``text``
- ``ptb``: ``ptb-text-only/ptb_text_only`` (``refs/convert/parquet``), ``penn_treebank/validation/0000.parquet``,
  field ``sentence``

The files are fetched through the hub cache (``huggingface_hub.hf_hub_download``) and read with
``datasets.load_dataset("parquet", data_files=...)``. The hub cache, unlike the ``datasets`` cache of a
hub data set, reloads offline (``HF_HUB_OFFLINE=1``) once a file is in it, so for an offline machine
fetch the files once (``hf download <repo> <file> --repo-type dataset --revision <revision>``) and
copy the hub cache (``$HF_HUB_CACHE``, by default ``~/.cache/huggingface/hub``) there, or point
``HF_HUB_CACHE`` at a copy of it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from gradprune.data.sources import is_offline_error, offline_hint, relative_note
from gradprune.errors import EvalError


@dataclass(frozen=True)
class HubText:
    """A hub data set split stored as parquet files, whose text field is joined into one string."""

    repo: str
    revision: str
    config: str
    split: str
    files: tuple[str, ...]  # the split's parquet files, as paths in the repo at ``revision``
    field: str
    joiner: str

    def fetch_command(self) -> str:
        """The shell command that puts this split's files into the hub cache."""
        rev = "" if self.revision == "main" else f" --revision {self.revision}"
        return f"hf download {self.repo} {' '.join(self.files)} --repo-type dataset{rev}"


HUB_TEXTS: dict[str, HubText] = {
    "wikitext2": HubText("Salesforce/wikitext", "main", "wikitext-2-raw-v1", "test",
                         ("wikitext-2-raw-v1/test-00000-of-00001.parquet",), "text", "\n\n"),
    "ptb": HubText("ptb-text-only/ptb_text_only", "refs/convert/parquet", "penn_treebank", "validation",
                   ("penn_treebank/validation/0000.parquet",), "sentence", " "),
}
EMBEDDED = "embedded"


@dataclass(frozen=True)
class PplText:
    """One perplexity text: the metric key (``ppl_<key>``), where it came from, and the text."""

    key: str
    source: str
    text: str


def ppl_key(name: str) -> str:
    """Metric key of an eval.ppl_datasets entry: the name itself, or a file path's sanitised stem."""
    if name in HUB_TEXTS or name == EMBEDDED:
        return name
    stem = re.sub(r"[^0-9a-z]+", "_", Path(name).stem.lower()).strip("_")
    return stem or "file"


def check_ppl_name(name: str) -> None:
    """A known data set name or an existing file; EvalError otherwise (no loading)."""
    if name in HUB_TEXTS or name == EMBEDDED:
        return
    path = Path(name).expanduser()
    if not path.is_file():
        known = ", ".join([*HUB_TEXTS, EMBEDDED])
        raise EvalError(f"eval.ppl_datasets: {name!r} is neither a known data set ({known}) nor a text file"
                        + relative_note(name))


def check_ppl_data(name: str) -> None:
    """EvalError (with the cause) unless ``name``'s text can be loaded; cheaper than :func:`load_ppl_text`.

    A hub text's files are fetched (or found in the hub cache) and their schema checked for the text
    field; no text is built. A file or the embedded text must be readable and not empty.
    """
    check_ppl_name(name)
    if name not in HUB_TEXTS:
        load_ppl_text(name)  # a local read; nothing cheaper tells "not empty, valid UTF-8"
        return
    import pyarrow.parquet as pq

    spec = HUB_TEXTS[name]
    for path in _fetch(name, spec):
        try:
            columns = pq.read_schema(path).names
        except Exception as exc:  # pyarrow raises ArrowInvalid / OSError for a broken file
            raise EvalError(f"eval.ppl_datasets: {name!r}: {path} is not a readable parquet file "
                            f"({type(exc).__name__}: {exc})") from None
        if spec.field not in columns:
            raise EvalError(f"eval.ppl_datasets: {name!r}: {path} has no field {spec.field!r} (has {columns})")


def load_ppl_text(name: str) -> PplText:
    """The text of one eval.ppl_datasets entry; EvalError naming the data set if it cannot be loaded."""
    check_ppl_name(name)
    if name in HUB_TEXTS:
        spec = HUB_TEXTS[name]
        paths = _fetch(name, spec)
        return PplText(name, _hub_source(spec, paths), _load_hub(name, spec, paths))
    if name == EMBEDDED:
        try:
            from gradprune.assets import PPL_PATH
        except ImportError as exc:
            raise EvalError(f"eval.ppl_datasets: 'embedded' needs gradprune.assets.PPL_PATH ({exc})") from None
        return PplText(EMBEDDED, "embedded", _read_file(Path(PPL_PATH), name))
    path = Path(name).expanduser()
    return PplText(ppl_key(name), f"file {path.resolve()}", _read_file(path, name))


def _describe(spec: HubText) -> str:
    return f"hub data set {spec.repo}@{spec.revision}, {spec.config}/{spec.split}"


def _hub_source(spec: HubText, paths: list[str]) -> str:
    commit = _commit(paths[0], spec.files[0])
    at = f"{spec.revision} (commit {commit})" if commit else spec.revision
    return f"hub:{spec.repo}@{at} {','.join(spec.files)} field={spec.field} joined with {spec.joiner!r}"


def _commit(local: str, repo_path: str) -> str | None:
    """The commit a hub-cache file belongs to (``.../snapshots/<commit>/<repo_path>``), if it is one."""
    parts = Path(local).parts
    depth = len(repo_path.split("/"))
    if len(parts) > depth + 1 and parts[-depth - 2] == "snapshots":
        return parts[-depth - 1]
    return None


def _fetch(name: str, spec: HubText) -> list[str]:
    """Local paths of the split's files: from the hub cache, downloaded into it if the hub can be reached."""
    from huggingface_hub import hf_hub_download

    paths = []
    for file in spec.files:
        try:
            paths.append(hf_hub_download(spec.repo, file, repo_type="dataset", revision=spec.revision))
        except Exception as exc:  # huggingface_hub raises many types (offline, 404, gated, revision, network)
            what = f"{type(exc).__name__}: {exc}"
            if is_offline_error(exc):
                raise EvalError(
                    f"eval.ppl_datasets: {name!r} ({_describe(spec)}) cannot be loaded: {file} is not "
                    f"available ({what}). " + offline_hint(
                        "list 'embedded' or a local text file in eval.ppl_datasets", spec.fetch_command())
                ) from None
            raise EvalError(
                f"eval.ppl_datasets: {name!r} ({_describe(spec)}) cannot be loaded: fetching {file} failed: {what}"
            ) from None
    return paths


def _load_hub(name: str, spec: HubText, paths: list[str]) -> str:
    import datasets

    try:
        ds = datasets.load_dataset("parquet", data_files={spec.split: paths}, split=spec.split)
    except Exception as exc:  # a broken or truncated file: pyarrow / datasets raise many types
        raise EvalError(f"eval.ppl_datasets: {name!r} ({_describe(spec)}): its parquet files {paths} cannot be "
                        f"read: {type(exc).__name__}: {exc}") from None
    if spec.field not in ds.column_names:
        raise EvalError(f"eval.ppl_datasets: {name!r} has no field {spec.field!r} (has {ds.column_names})")
    # joined exactly as the papers do, empty rows included (WikiText2's blank lines are part of its text)
    return spec.joiner.join(ds[spec.field])


def _read_file(path: Path, name: str) -> str:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise EvalError(f"eval.ppl_datasets: cannot read {name!r} ({path}): {exc}") from None
    if not text.strip():
        raise EvalError(f"eval.ppl_datasets: {name!r} ({path}) is empty")
    return text
