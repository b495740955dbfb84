"""Recovery examples: instruction records tokenized as LLM-Pruner does (prompt out of the loss), plain text
cut into windows, and right-padded micro-batches."""

from __future__ import annotations

import json

import pytest

from gradprune import plugins
from gradprune.data.templates import ALPACA
from gradprune.errors import DataError
from gradprune.recovery.training_data import IGNORE, Example, build_training_set, pad_batch

RECORDS = [{"instruction": f"Say the number {i}.", "input": "in words" if i % 2 else "", "output": f"It is {i}."}
           for i in range(6)]


@pytest.fixture
def alpaca(tmp_path):
    path = tmp_path / "alpaca.json"
    path.write_text(json.dumps(RECORDS))
    return plugins.DATA.build("instructions", {"path": str(path)}, "recovery.dataset")


def test_prompt_is_left_out_of_the_loss(alpaca, tokenizer):
    data = build_training_set(alpaca, tokenizer, cutoff_len=256, train_on_inputs=False)
    assert len(data.examples) == len(RECORDS) and data.provenance["kind"] == "instructions"
    for record, ex in zip(RECORDS, data.examples, strict=True):
        full = tokenizer(ALPACA.full_text(record))["input_ids"]
        n_prompt = len(tokenizer(ALPACA.prompt(record))["input_ids"])
        assert ex.input_ids == [*full, tokenizer.eos_token_id]  # EOS appended: there is room
        assert ex.labels[:n_prompt] == [IGNORE] * n_prompt
        assert ex.labels[n_prompt:] == ex.input_ids[n_prompt:]
    on_inputs = build_training_set(alpaca, tokenizer, cutoff_len=256, train_on_inputs=True)
    assert all(e.labels == e.input_ids for e in on_inputs.examples)
    assert build_training_set(alpaca, tokenizer, 256, False, max_examples=4).provenance["examples"] == 4


def test_cutoff_truncates_and_drops_examples_with_nothing_to_learn(alpaca, tokenizer):
    prompts = [len(tokenizer(ALPACA.prompt(r))["input_ids"]) for r in RECORDS]
    cutoff = min(prompts) + 1  # room for one response token after the shortest prompts only
    data = build_training_set(alpaca, tokenizer, cutoff_len=cutoff, train_on_inputs=False)
    kept = sum(n < cutoff for n in prompts)
    assert 0 < kept < len(RECORDS)
    assert len(data.examples) == kept and data.provenance["dropped_prompt_fills_cutoff"] == len(RECORDS) - kept
    assert all(len(e.input_ids) == cutoff and sum(t != IGNORE for t in e.labels) == 1 for e in data.examples)
    with pytest.raises(DataError, match="gives no example to train on"):
        build_training_set(alpaca, tokenizer, cutoff_len=8, train_on_inputs=False)
    short = build_training_set(alpaca, tokenizer, cutoff_len=8, train_on_inputs=True)
    assert all(len(e.input_ids) == 8 for e in short.examples) and short.provenance["truncated"] == len(RECORDS)


def test_plain_text_is_cut_into_windows(corpus_file, tokenizer):
    src = plugins.DATA.build("text_file", {"path": str(corpus_file)}, "recovery.dataset")
    data = build_training_set(src, tokenizer, cutoff_len=32, train_on_inputs=False, max_examples=10)
    assert len(data.examples) == 10 and data.tokens == 320
    assert all(e.labels == e.input_ids and len(e.input_ids) == 32 for e in data.examples)
    first = tokenizer(corpus_file.read_text().split("\n\n")[0], add_special_tokens=False)["input_ids"]
    assert data.examples[0].input_ids == first[:32]


def test_pad_batch_masks_padding_and_counts_tokens():
    batch = pad_batch([Example([5, 6, 7], [IGNORE, 6, 7]), Example([8], [8])], pad_id=0)
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch["labels"].tolist() == [[IGNORE, 6, 7], [8, IGNORE, IGNORE]]
    assert (batch["tokens"], batch["trained_tokens"]) == (4, 2)  # a first label is never predicted
