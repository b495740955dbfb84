"""WikiText2 and PTB through the real loading path, offline, from a hub cache laid out as huggingface_hub lays it out.

The hub cache keeps a repo's files at ``datasets--<owner>--<name>/snapshots/<commit>/<path in repo>``
and a branch's commit in ``refs/<branch>`` (``refs/refs/convert/parquet`` for the parquet export);
``hf_hub_download`` reads them there when offline. The parquet files use the hub's layout and fields:
``Salesforce/wikitext`` ``wikitext-2-raw-v1/test-00000-of-00001.parquet`` (``text``) and
``ptb-text-only/ptb_text_only`` at ``refs/convert/parquet``: ``penn_treebank/validation/0000.parquet``
(``sentence``).
"""

from __future__ import annotations

import pytest

from gradprune.data.sources import is_offline_error
from gradprune.errors import EvalError
from gradprune.eval.perplexity import evaluate_ppl
from gradprune.eval.ppl_data import HUB_TEXTS, check_ppl_data, load_ppl_text

WIKI_ROWS = ["", " = Robert Boulter = \n", "", " Robert Boulter is an English film and television actor .\n",
             "", " = = Career = = \n", "", " In 2000 Boulter had a guest @-@ starring role .\n"]
PTB_ROWS = ["aer banknote berlitz calloway centrust", "pierre <unk> N years old will join the board",
            "mr. <unk> is chairman of <unk> n.v. the dutch publishing group"]
COMMITS = {"wikitext2": "1" * 40, "ptb": "2" * 40}


@pytest.fixture
def hub_cache(monkeypatch, tmp_path):
    """An empty hub cache and datasets cache of this test's own; returns a function that caches a text."""
    import datasets
    import huggingface_hub.constants

    cache = tmp_path / "hub"
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "datasets")

    def put(name: str, rows: list[str] | None = None, field: str | None = None, raw: bytes | None = None):
        import pyarrow as pa
        import pyarrow.parquet as pq

        spec = HUB_TEXTS[name]
        repo_dir = cache / f"datasets--{spec.repo.replace('/', '--')}"
        ref = repo_dir / "refs" / spec.revision
        ref.parent.mkdir(parents=True, exist_ok=True)
        ref.write_text(COMMITS[name])
        path = repo_dir / "snapshots" / COMMITS[name] / spec.files[0]
        path.parent.mkdir(parents=True, exist_ok=True)
        if raw is not None:
            path.write_bytes(raw)
        else:
            pq.write_table(pa.table({field or spec.field: rows}), path)
        return path

    return put


def test_wikitext2_is_every_test_row_joined_by_blank_lines(hub_cache):
    hub_cache("wikitext2", WIKI_ROWS)
    text = load_ppl_text("wikitext2")
    assert text.key == "wikitext2"
    assert text.text == "\n\n".join(WIKI_ROWS)  # empty rows included, as GPTQ/SparseGPT/Wanda/LLM-Pruner
    assert text.text.startswith("\n\n = Robert Boulter = \n\n\n\n\n Robert")
    assert f"Salesforce/wikitext@main (commit {COMMITS['wikitext2']})" in text.source
    assert "wikitext-2-raw-v1/test-00000-of-00001.parquet" in text.source


def test_ptb_is_the_validation_sentences_joined_by_spaces(hub_cache):
    hub_cache("ptb", PTB_ROWS)
    text = load_ppl_text("ptb")
    assert text.text == " ".join(PTB_ROWS)
    assert f"ptb-text-only/ptb_text_only@refs/convert/parquet (commit {COMMITS['ptb']})" in text.source


def test_hub_texts_score_perplexity(hub_cache, eval_model, eval_tokenizer, eval_cfg):
    hub_cache("wikitext2", WIKI_ROWS * 4)
    hub_cache("ptb", PTB_ROWS * 4)
    cfg = eval_cfg(run="ppl", ppl_datasets=["wikitext2", "ptb"], ppl_seq_len=16, ppl_max_windows=2)
    metrics, _ = evaluate_ppl(eval_model, eval_tokenizer, cfg)
    assert {"ppl_wikitext2", "ppl_ptb"} <= set(metrics)
    assert all(v > 1 for v in metrics.values())


def test_check_ppl_data_passes_on_cached_files(hub_cache, ppl_file):
    hub_cache("ptb", PTB_ROWS)
    check_ppl_data("ptb")
    check_ppl_data(str(ppl_file))


@pytest.mark.parametrize("check", [load_ppl_text, check_ppl_data])
@pytest.mark.parametrize("name", ["wikitext2", "ptb"])
def test_not_cached_offline_says_so_and_how_to_fetch(hub_cache, check, name):
    spec = HUB_TEXTS[name]
    with pytest.raises(EvalError) as err:
        check(name)
    msg = str(err.value)
    assert msg.startswith(f"eval.ppl_datasets: {name!r} (hub data set {spec.repo}@{spec.revision}, "
                          f"{spec.config}/{spec.split}) cannot be loaded")
    assert "LocalEntryNotFoundError" in msg and "offline mode is on (HF_DATASETS_OFFLINE=1" in msg
    assert spec.fetch_command() in msg
    if name == "ptb":
        assert spec.fetch_command() == ("hf download ptb-text-only/ptb_text_only penn_treebank/validation/0000.parquet"
                                        " --repo-type dataset --revision refs/convert/parquet")


@pytest.mark.parametrize("check", [load_ppl_text, check_ppl_data])
def test_a_broken_cached_file_is_not_called_offline(hub_cache, check):
    hub_cache("wikitext2", raw=b"not a parquet file")
    with pytest.raises(EvalError, match=r"'wikitext2'.*(cannot be|not a) read") as err:
        check("wikitext2")
    assert "not in the local cache" not in str(err.value)


@pytest.mark.parametrize("check", [load_ppl_text, check_ppl_data])
def test_a_wrong_field_is_named(hub_cache, check):
    hub_cache("ptb", PTB_ROWS, field="text")
    with pytest.raises(EvalError, match="'ptb'.*no field 'sentence'"):
        check("ptb")


def test_offline_errors_are_told_apart():
    from huggingface_hub.errors import LocalEntryNotFoundError

    assert is_offline_error(ConnectionError("Couldn't reach 'x' on the Hub (OfflineModeIsEnabled)"))
    assert is_offline_error(LocalEntryNotFoundError("not in the cache"))
    try:
        try:
            raise TimeoutError("read timed out")
        except TimeoutError as inner:
            raise RuntimeError("download failed") from inner
    except RuntimeError as chained:
        assert is_offline_error(chained)
    assert not is_offline_error(FileNotFoundError("Unable to find '/data/x.json'"))
    assert not is_offline_error(ValueError("BuilderConfig 'x' not found"))
