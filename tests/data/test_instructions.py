"""Instruction data sets: local JSON / JSONL records in the alpaca template, and records that do not fit it."""

from __future__ import annotations

import json

import pytest

from gradprune import plugins
from gradprune.data.templates import ALPACA
from gradprune.errors import DataError, PluginError

RECORDS = [
    {"instruction": "Give three tips for staying healthy.", "input": "", "output": "Eat well."},
    {"instruction": "Translate the sentence.", "input": "Guten Tag", "output": "Good day"},
    {"instruction": "Name a colour.", "input": "", "output": "Red"},
]


def _source(path, **params):
    return plugins.DATA.build("instructions", {"path": str(path), **params}, "recovery.dataset")


def test_alpaca_template_is_llm_prunes(tmp_path):
    # the strings of alpaca-lora's templates/alpaca.json, which LLM-Pruner's Prompter uses
    assert ALPACA.prompt(RECORDS[0]) == (
        "Below is an instruction that describes a task. Write a response that appropriately completes the "
        "request.\n\n### Instruction:\nGive three tips for staying healthy.\n\n### Response:\n")
    assert ALPACA.prompt(RECORDS[1]) == (
        "Below is an instruction that describes a task, paired with an input that provides further context. "
        "Write a response that appropriately completes the request.\n\n### Instruction:\nTranslate the "
        "sentence.\n\n### Input:\nGuten Tag\n\n### Response:\n")
    assert ALPACA.full_text(RECORDS[1]) == ALPACA.prompt(RECORDS[1]) + "Good day"
    assert ALPACA.prompt({"instruction": "x", "output": "y"}) == ALPACA.prompt({"instruction": "x", "input": "",
                                                                                "output": "y"})


@pytest.mark.parametrize("suffix", [".json", ".jsonl"])
def test_local_records_in_file_order(tmp_path, suffix):
    path = tmp_path / f"alpaca{suffix}"
    path.write_text(json.dumps(RECORDS) if suffix == ".json" else "\n".join(map(json.dumps, RECORDS)) + "\n")
    src = _source(path)
    assert list(src.records()) == RECORDS
    assert list(src.documents()) == [ALPACA.full_text(r) for r in RECORDS]
    assert list(_source(path, max_examples=2).records()) == RECORDS[:2]
    assert "alpaca template" in src.describe()


def test_a_record_without_the_templates_fields_names_file_and_fields(tmp_path):
    path = tmp_path / "chat.jsonl"
    path.write_text(json.dumps({"prompt": "hi", "completion": "hello"}) + "\n")
    with pytest.raises(DataError) as e:
        next(_source(path).records())
    msg = str(e.value)
    assert f"{path}:1" in msg and "'instruction', 'output'" in msg and "prompt, completion" in msg
    assert msg.startswith("calibration.dataset")  # the key of the section that built it (set by the caller)


def test_unknown_template_and_missing_file(tmp_path):
    with pytest.raises(PluginError, match="recovery.dataset.template: unknown prompt template; known: alpaca"):
        _source(tmp_path / "a.json", template="vicuna")
    src = _source(tmp_path / "absent.json")
    src.key = "recovery.dataset"
    with pytest.raises(DataError, match=r"recovery.dataset.path: .*absent.json' is missing"):
        next(src.records())


def test_a_local_folder_in_the_hub_layout_loads_through_datasets(tmp_path):
    folder = tmp_path / "alpaca-cleaned"  # as `hf download yahma/alpaca-cleaned --local-dir` leaves it
    folder.mkdir()
    (folder / "alpaca_data_cleaned.json").write_text(json.dumps(RECORDS))
    records = list(_source(folder).records())
    assert [{k: r[k] for k in ("instruction", "input", "output")} for r in records] == RECORDS
