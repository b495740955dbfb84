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
