"""Perplexity texts: WikiText2 and PTB through ``datasets``, the embedded text, or a local text file.

Each source gives one long string, built the way the pruning papers build it (LLM-Pruner, Wanda,
SparseGPT): WikiText2 test rows joined with ``"\\n\\n"``, PTB validation sentences joined with ``" "``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from gradprune.errors import EvalError
from gradprune.eval.hints import offline_hint


@dataclass(frozen=True)
class HubText:
    """A ``datasets`` data set whose text field is joined into one string."""

    path: str
    config: str | None
    split: str
    field: str
    joiner: str


HUB_TEXTS: dict[str, HubText] = {
    "wikitext2": HubText("wikitext", "wikitext-2-raw-v1", "test", "text", "\n\n"),
    "ptb": HubText("ptb_text_only", "penn_treebank", "validation", "sentence", " "),
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
        raise EvalError(f"eval.ppl_datasets: {name!r} is neither a known data set ({known}) nor a text file")


def load_ppl_text(name: str) -> PplText:
    """The text of one eval.ppl_datasets entry; EvalError naming the data set if it cannot be loaded."""
    check_ppl_name(name)
    if name in HUB_TEXTS:
        return PplText(name, _hub_source(HUB_TEXTS[name]), _load_hub(name, HUB_TEXTS[name]))
    if name == EMBEDDED:
        try:
            from gradprune.assets import PPL_PATH
        except ImportError as exc:
            raise EvalError(f"eval.ppl_datasets: 'embedded' needs gradprune.assets.PPL_PATH ({exc})") from None
        return PplText(EMBEDDED, "embedded", _read_file(Path(PPL_PATH), name))
    path = Path(name).expanduser()
    return PplText(ppl_key(name), f"file {path.resolve()}", _read_file(path, name))


def _hub_source(spec: HubText) -> str:
    cfg = f"/{spec.config}" if spec.config else ""
    return f"datasets:{spec.path}{cfg} split={spec.split} field={spec.field} joined with {spec.joiner!r}"


def _read_file(path: Path, name: str) -> str:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise EvalError(f"eval.ppl_datasets: cannot read {name!r} ({path}): {exc}") from None
    if not text.strip():
        raise EvalError(f"eval.ppl_datasets: {name!r} ({path}) is empty")
    return text


def _load_hub(name: str, spec: HubText) -> str:
    import datasets

    try:
        ds = datasets.load_dataset(spec.path, spec.config, split=spec.split)
    except Exception as exc:  # datasets raises many types (ConnectionError, FileNotFoundError, ...)
        raise EvalError(
            f"eval.ppl_datasets: {name!r} (datasets {spec.path!r}, {spec.config}, split {spec.split!r}) "
            f"cannot be loaded: {type(exc).__name__}: {exc}. "
            + offline_hint("list 'embedded' or a local text file in eval.ppl_datasets")
        ) from None
    if spec.field not in ds.column_names:
        raise EvalError(f"eval.ppl_datasets: {name!r} has no field {spec.field!r} (has {ds.column_names})")
    return spec.joiner.join(ds[spec.field])
