"""The ``hf`` source through the real ``datasets.load_dataset``, offline, on a C4 shard laid out as on the hub.

``allenai/c4`` keeps its English shards at ``en/c4-train.NNNNN-of-01024.json.gz`` (JSON lines with
``text``, ``timestamp``, ``url``); a local directory in that layout is what ``hf download allenai/c4
--repo-type dataset --include ... --local-dir DIR`` leaves, and loads like the hub repo.
"""

from __future__ import annotations

import gzip
import json
import time

import pytest

from gradprune import plugins
from gradprune.data.windows import draw_windows
from gradprune.errors import DataError, PluginError
from gradprune.recipe import validate_dict

SHARD = "en/c4-train.00000-of-01024.json.gz"
C4_FILES = {"train": SHARD}


@pytest.fixture(autouse=True)
def _own_hf_caches(monkeypatch, tmp_path):
    """datasets writes prepared data and extracted files under its cache: keep them in this test's tmp dir."""
    import datasets

    cache = tmp_path / "hf_datasets_cache"
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", cache)
    monkeypatch.setattr(datasets.config, "DOWNLOADED_DATASETS_PATH", cache / "downloads")
    monkeypatch.setattr(datasets.config, "EXTRACTED_DATASETS_PATH", cache / "downloads" / "extracted")


def _docs(n: int, words: list[str], length: int = 40) -> list[str]:
    return [" ".join(words[(i + j) % len(words)] for j in range(length)) + f" {i}" for i in range(n)]


def write_c4(root, docs: list[str], tail: str = "") -> None:
    """``root/en/c4-train.00000-of-01024.json.gz`` with C4's fields; ``tail`` is appended raw (e.g. junk)."""
    path = root / SHARD
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt", encoding="utf-8") as fh:
        for i, text in enumerate(docs):
            fh.write(json.dumps({"text": text, "timestamp": "2019-04-25T12:57:54Z",
                                 "url": f"https://example.com/{i}"}) + "\n")
        fh.write(tail)


def _hf(**params):
    return plugins.DATA.build("hf", params, "calibration.dataset")


@pytest.fixture
def c4_dir(tmp_path, corpus_file):
    root = tmp_path / "c4"
    write_c4(root, _docs(400, corpus_file.read_text().split()[:200]))
    return root


@pytest.mark.parametrize("streaming", [True, False])
def test_c4_shard_in_the_hub_layout_draws_windows(c4_dir, tokenizer, streaming):
    src = _hf(path=str(c4_dir), data_files=C4_FILES, split="train", field="text", streaming=streaming)
    w = draw_windows(src, tokenizer, 16, 8, seed=0)
    assert w.input_ids.shape == (8, 16)
    assert 0 < w.provenance["documents_read"] < 400
    assert SHARD in w.provenance["source"] and ("streaming" in w.provenance["source"]) == streaming


def test_streaming_and_prepared_give_the_same_documents(c4_dir, tokenizer):
    common = dict(path=str(c4_dir), data_files=C4_FILES, field="text")
    a, b = _hf(**common, streaming=True), _hf(**common, streaming=False)
    assert list(a.documents()) == list(b.documents())
    assert [t for t in b.indexed() if t.strip()] == list(b.documents())


def test_a_prepared_set_is_drawn_from_all_its_documents_a_stream_from_its_first(c4_dir, tokenizer):
    """Random access lets every seed reach the whole shard; a stream is read only as far as it must."""
    common = dict(path=str(c4_dir), data_files=C4_FILES, field="text")
    docs = list(_hf(**common).documents())
    first: dict[bool, set[int]] = {}
    for streaming in (True, False):
        src = _hf(**common, streaming=streaming)
        ws = [draw_windows(src, tokenizer, 16, 8, seed=s) for s in range(4)]
        assert ws[0].provenance["sha256"] == draw_windows(src, tokenizer, 16, 8, seed=0).provenance["sha256"]
        assert len({w.provenance["sha256"] for w in ws}) == 4
        read = max(w.provenance["documents_read"] for w in ws)
        assert read < len(docs) / 4
        first[streaming] = {int(t) for w in ws for t in w.input_ids[:, 0]}
    # the tokens the prepared draws start with come from further into the shard than a stream reaches
    assert first[False] != first[True]


def test_json_builder_with_a_local_data_file(c4_dir, tokenizer):
    src = _hf(path="json", data_files={"train": str(c4_dir / SHARD)}, streaming=True)
    assert next(iter(src.documents())).endswith(" 0")
    assert draw_windows(src, tokenizer, 16, 8, seed=0).input_ids.shape == (8, 16)


def test_streaming_reads_only_a_prefix_of_a_big_shard(tmp_path, tokenizer, corpus_file):
    # ~20 MB of JSON (twice the json reader's 10 MB chunk) followed by a line that is not JSON:
    # streaming draws from the first documents and never reaches it; preparing the split must parse it.
    n = 10_000
    root = tmp_path / "c4"
    write_c4(root, _docs(n, corpus_file.read_text().split()[:200], length=400), tail="this line is not json\n")
    streamed = draw_windows(_hf(path=str(root), data_files=C4_FILES, streaming=True), tokenizer, 16, 8, seed=0)
    assert streamed.provenance["documents_read"] < n // 100
    with pytest.raises(DataError, match=r"calibration\.dataset: cannot load datasets .*c4"):
        next(iter(_hf(path=str(root), data_files=C4_FILES, streaming=False).documents()))


def test_first_document_is_cheap(c4_dir):
    src = _hf(path=str(c4_dir), data_files=C4_FILES, streaming=True)
    start = time.perf_counter()
    first = next(iter(src.documents()))
    assert first.endswith(" 0") and time.perf_counter() - start < 10


def test_max_documents(c4_dir):
    src = _hf(path=str(c4_dir), data_files=C4_FILES, streaming=True, max_documents=5)
    assert len(list(src.documents())) == 5


@pytest.mark.parametrize("streaming", [True, False])
def test_missing_field_names_the_columns(c4_dir, streaming):
    src = _hf(path=str(c4_dir), data_files=C4_FILES, field="content", streaming=streaming)
    with pytest.raises(DataError, match=r"calibration\.dataset\.field: 'content' is not a column.*text"):
        next(iter(src.documents()))


def test_missing_local_file_is_the_cause_not_offline(tmp_path):
    src = _hf(path="json", data_files={"train": str(tmp_path / "nope.json.gz")})
    with pytest.raises(DataError) as err:
        next(iter(src.documents()))
    msg = str(err.value)
    assert "calibration.dataset" in msg and "nope.json.gz" in msg and "FileNotFoundError" in msg
    assert "not in the local cache" not in msg and "offline mode" not in msg


@pytest.mark.parametrize("streaming", [True, False])
def test_hub_repo_offline_gets_the_offline_hint_and_the_download(streaming):
    src = _hf(path="allenai/c4", data_files=C4_FILES, streaming=streaming)
    with pytest.raises(DataError) as err:
        next(iter(src.documents()))
    msg = str(err.value)
    assert "datasets allenai/c4" in msg and "offline mode is on (HF_DATASETS_OFFLINE=1" in msg
    assert f"hf download allenai/c4 --repo-type dataset --include {SHARD} --local-dir DIR" in msg
    assert ("caches nothing" in msg) == streaming


def test_script_data_set_says_to_use_the_parquet_export(tmp_path):
    repo = tmp_path / "ptb_text_only"
    repo.mkdir()
    (repo / "ptb_text_only.py").write_text("# a loading script\n")
    with pytest.raises(DataError, match="no loading scripts.*refs/convert/parquet") as err:
        next(iter(_hf(path=str(repo)).documents()))
    assert "not in the local cache" not in str(err.value)


def test_path_is_required_and_the_c4_spec_validates():
    with pytest.raises(PluginError, match="path"):
        plugins.DATA.build("hf", {}, "calibration.dataset")
    spec = {"name": "hf", "path": "allenai/c4", "data_files": C4_FILES, "split": "train", "field": "text",
            "streaming": True}
    recipe = validate_dict({"calibration": {"dataset": spec}}, "recipe.yaml")
    assert recipe.calibration.dataset.model_dump()["data_files"] == C4_FILES
