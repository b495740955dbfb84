"""Perplexity: reference values, windows, batch invariance, metric names, data set errors."""

from __future__ import annotations

import math

import pytest
import torch

from gradprune.errors import EvalError
from gradprune.eval.perplexity import evaluate_ppl, perplexity, ppl_batch_size, tokenize_text
from gradprune.eval.ppl_data import load_ppl_text, ppl_key


def _ids(tokenizer, text_file, n=None):
    ids = tokenize_text(tokenizer, text_file.read_text())
    return ids[:n] if n else ids


def test_one_window_matches_transformers_loss(eval_model, eval_tokenizer, ppl_file):
    ids = _ids(eval_tokenizer, ppl_file, 64)
    stats = perplexity(eval_model, ids, seq_len=64, batch_size=1)
    with torch.no_grad():
        loss = eval_model(input_ids=torch.tensor([ids]), labels=torch.tensor([ids])).loss
    assert stats.windows == 1 and stats.predicted_tokens == 63
    assert stats.ppl == pytest.approx(math.exp(loss.item()), rel=1e-5)


def test_token_weighted_mean_over_windows_and_dropped_tail(eval_model, eval_tokenizer, ppl_file):
    ids = _ids(eval_tokenizer, ppl_file, 5 * 32 + 7)
    stats = perplexity(eval_model, ids, seq_len=32, batch_size=2)
    assert (stats.windows, stats.predicted_tokens, stats.dropped_tail_tokens) == (5, 5 * 31, 7)
    with torch.no_grad():
        losses = [eval_model(input_ids=torch.tensor([w]), labels=torch.tensor([w])).loss.item()
                  for w in (ids[i * 32:(i + 1) * 32] for i in range(5))]
    assert stats.ppl == pytest.approx(math.exp(sum(losses) / 5), rel=1e-5)  # equal windows: mean of means


def test_batch_size_does_not_change_the_result(eval_model, eval_tokenizer, ppl_file):
    ids = _ids(eval_tokenizer, ppl_file, 10 * 48)
    one = perplexity(eval_model, ids, seq_len=48, batch_size=1)
    many = perplexity(eval_model, ids, seq_len=48, batch_size=4)  # batches of 4, 4, 2
    assert many.ppl == pytest.approx(one.ppl, rel=1e-5)


def test_max_windows_caps_and_short_text_fails(eval_model, eval_tokenizer, ppl_file):
    ids = _ids(eval_tokenizer, ppl_file)
    assert perplexity(eval_model, ids, seq_len=32, batch_size=8, max_windows=3).windows == 3
    with pytest.raises(EvalError, match="fewer than one window"):
        perplexity(eval_model, ids[:20], seq_len=32, batch_size=1)


def test_bf16_model_sums_in_fp32_and_keeps_its_dtype(eval_model, eval_tokenizer, ppl_file):
    ids = _ids(eval_tokenizer, ppl_file, 4 * 32)
    ref = perplexity(eval_model, ids, seq_len=32, batch_size=4).ppl
    model = eval_model.to(torch.bfloat16)
    got = perplexity(model, ids, seq_len=32, batch_size=4).ppl
    assert all(p.dtype == torch.bfloat16 for p in model.parameters())
    assert got == pytest.approx(ref, rel=0.05)


def test_auto_batch_size_keeps_logits_small():
    assert ppl_batch_size(3, 128, 32000) == 3
    assert ppl_batch_size("auto", 2048, 32000) == 1
    assert ppl_batch_size("auto", 128, 32000) == 16
    assert ppl_batch_size("auto", 16, 400) == 64


def test_metric_names_with_two_seq_lens(eval_model, eval_tokenizer, ppl_file, eval_cfg):
    cfg = eval_cfg(run="ppl", ppl_datasets=[str(ppl_file)], ppl_seq_len=[64, 32], ppl_max_windows=4)
    metrics, info = evaluate_ppl(eval_model, eval_tokenizer, cfg)
    assert list(metrics) == ["ppl_held_out", "ppl_held_out_64", "ppl_held_out_32", "ppl"]
    assert metrics["ppl"] == metrics["ppl_held_out"] == metrics["ppl_held_out_64"]
    rec = info["datasets"]["held_out"]["by_seq_len"]
    assert rec["32"]["windows"] == 4 and rec["64"]["predicted_tokens"] == 4 * 63
    assert "last partial window dropped" in info["protocol"] and info["max_windows"] == 4


def test_one_seq_len_gives_no_suffixed_names(eval_model, eval_tokenizer, ppl_file, eval_cfg):
    cfg = eval_cfg(run="ppl", ppl_datasets=[str(ppl_file)], ppl_seq_len=32, ppl_max_windows=2)
    metrics, _ = evaluate_ppl(eval_model, eval_tokenizer, cfg)
    assert set(metrics) == {"ppl", "ppl_held_out"}


@pytest.mark.parametrize("name", ["wikitext2", "ptb"])
def test_hub_text_offline_names_the_data_set_and_the_hint(name):
    with pytest.raises(EvalError) as err:
        load_ppl_text(name)
    msg = str(err.value)
    assert repr(name) in msg and "HF_DATASETS_OFFLINE" in msg


def test_embedded_and_file_keys(tmp_path):
    assert ppl_key("embedded") == "embedded" and ppl_key("wikitext2") == "wikitext2"
    assert ppl_key("/data/My Corpus.v2.txt") == "my_corpus_v2"
    with pytest.raises(EvalError, match="neither a known data set"):
        load_ppl_text(str(tmp_path / "missing.txt"))
    (tmp_path / "empty.txt").write_text("  \n")
    with pytest.raises(EvalError, match="is empty"):
        load_ppl_text(str(tmp_path / "empty.txt"))


def test_embedded_is_the_shipped_ppl_text(monkeypatch, tmp_path, eval_model, eval_tokenizer, eval_cfg, ppl_file):
    import gradprune.assets

    monkeypatch.setattr(gradprune.assets, "PPL_PATH", ppl_file)
    text = load_ppl_text("embedded")
    assert text.key == "embedded" and text.text == ppl_file.read_text()
    cfg = eval_cfg(run="ppl", ppl_datasets=["embedded"], ppl_seq_len=32, ppl_max_windows=2)
    metrics, _ = evaluate_ppl(eval_model, eval_tokenizer, cfg)
    assert set(metrics) == {"ppl", "ppl_embedded"}
    monkeypatch.setattr(gradprune.assets, "PPL_PATH", tmp_path / "not_built.txt")
    with pytest.raises(EvalError, match="cannot read 'embedded'"):
        load_ppl_text("embedded")
