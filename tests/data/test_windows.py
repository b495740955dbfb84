"""Calibration windows: seeded, reproducible, recorded; too little text is a clear error."""

from __future__ import annotations

import json

import pytest

from gradprune import plugins
from gradprune.data.windows import draw_windows
from gradprune.errors import DataError


def _src(path, **kw):
    return plugins.DATA.build("text_file", {"path": str(path), **kw})


def test_same_seed_same_windows_other_seed_other(corpus_file, tokenizer):
    a = draw_windows(_src(corpus_file), tokenizer, 16, 8, seed=0)
    b = draw_windows(_src(corpus_file), tokenizer, 16, 8, seed=0)
    c = draw_windows(_src(corpus_file), tokenizer, 16, 8, seed=1)
    assert a.input_ids.shape == (8, 16)
    assert a.provenance["sha256"] == b.provenance["sha256"] != c.provenance["sha256"]
    assert a.provenance["slots"] == sorted(a.provenance["slots"])


def test_too_little_text(tmp_path, tokenizer):
    p = tmp_path / "small.txt"
    p.write_text("the cat owns a red box")
    with pytest.raises(DataError, match="holds only .* windows of seq_len=16; num_samples=100"):
        draw_windows(_src(p), tokenizer, 16, 100, seed=0)


def test_jsonl_source(tmp_path, tokenizer):
    p = tmp_path / "d.jsonl"
    p.write_text("\n".join(json.dumps({"content": "the dog runs near the tree " * 20}) for _ in range(20)))
    w = draw_windows(_src(p, field="content"), tokenizer, 8, 10, seed=0)
    assert w.input_ids.shape == (10, 8)
    with pytest.raises(DataError, match="no field 'text'"):
        list(_src(p).documents())


def test_missing_or_directory_path(tmp_path):
    with pytest.raises(DataError, match="missing"):
        list(_src(tmp_path / "nope.txt").documents())
    with pytest.raises(DataError, match="is a directory"):
        list(_src(tmp_path).documents())


class _Counted:
    """A source that counts the documents handed out and whether its generator was closed."""

    def __init__(self, docs):
        self.docs, self.handed, self.closed = docs, 0, False

    def documents(self):
        try:
            for d in self.docs:
                self.handed += 1
                yield d
        finally:
            self.closed = True

    def describe(self):
        return "counted"


def test_reads_only_the_documents_the_draw_needs(corpus_file, tokenizer):
    docs = corpus_file.read_text().split("\n\n") * 20  # 6,000 documents, ~300k tokens
    src = _Counted(docs)
    w = draw_windows(src, tokenizer, 16, 8, seed=0)
    need = 16 * 8 * 4
    assert src.handed == w.provenance["documents_read"] < len(docs) // 100
    assert need <= w.provenance["stream_tokens"] < need + 200  # one document past the need at most
    assert src.closed  # the half-read generator was closed, not left holding its file open


def test_a_streams_draw_depends_only_on_what_was_read(corpus_file, tokenizer):
    # a stream that continues past what the draw reads gives the same windows as its beginning alone
    docs = corpus_file.read_text().split("\n\n")
    a = draw_windows(_Counted(docs), tokenizer, 16, 8, seed=5)
    b = draw_windows(_Counted(docs + ["the river runs near the big house " * 500]), tokenizer, 16, 8, seed=5)
    assert a.provenance["sha256"] == b.provenance["sha256"]
    assert a.provenance["documents_read"] == b.provenance["documents_read"]


def test_a_local_file_is_drawn_in_a_seeded_order_over_all_its_documents(corpus_file, tokenizer):
    """Seeds reach every part of a file (not only its beginning), and the same seed draws the same."""
    docs = corpus_file.read_text().split("\n\n")
    stream = draw_windows(_Counted(docs), tokenizer, 16, 8, seed=1)
    whole = [draw_windows(_src(corpus_file), tokenizer, 16, 8, seed=s) for s in (1, 1, 2)]
    assert whole[0].provenance["sha256"] == whole[1].provenance["sha256"] != whole[2].provenance["sha256"]
    assert whole[0].provenance["order"] == "seeded over all documents"
    assert stream.provenance["order"] == "stream prefix, seeded shuffle"
    assert whole[0].provenance["sha256"] != stream.provenance["sha256"]


def test_a_short_source_is_read_to_the_end(tmp_path, tokenizer):
    p = tmp_path / "few.txt"
    p.write_text("\n\n".join(["the cat owns a red box near the tree"] * 12))
    w = draw_windows(_src(p), tokenizer, 8, 8, seed=0)
    assert w.provenance["stream_tokens"] < 8 * 8 * 4  # less than the draw would read
    assert w.provenance["documents_read"] == 12


def test_text_file_documents_are_blank_line_blocks(tmp_path):
    p = tmp_path / "t.txt"
    p.write_text("\n\n first doc \nline two\n\n\n\nsecond\n  \n\nthird")
    assert list(_src(p).documents()) == ["first doc \nline two", "second", "third"]
