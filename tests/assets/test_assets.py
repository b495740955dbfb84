"""The embedded assets: seeded generator, held-out task items, shipped model and lm-eval task files."""

from __future__ import annotations

import itertools
import json
import math
import os
from collections import Counter

import pytest

from gradprune.assets import (
    CORPUS_PATH,
    MODEL_DIR,
    PPL_PATH,
    REPORT_PATH,
    TASK_NAMES,
    TASKS_DIR,
)
from gradprune.assets.corpus import corpus_docs, corpus_text
from gradprune.assets.task_files import SPLIT_SIZES, TASK_KINDS, build_all_tasks, heldout_probe, render_tasks

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


@pytest.fixture(scope="module")
def shipped_seed() -> int:
    """The seed the shipped assets were generated from."""
    return json.loads(REPORT_PATH.read_text("utf-8"))["seed"]


@pytest.fixture(scope="module")
def tasks_and_keys(shipped_seed):
    """Task splits and held-out keys regenerated from the shipped seed."""
    return build_all_tasks(shipped_seed)


def test_generator_is_deterministic_from_the_seed(tasks_and_keys):
    tasks, held = tasks_and_keys
    again, held_again = build_all_tasks(json.loads(REPORT_PATH.read_text("utf-8"))["seed"])
    assert again == tasks and held_again == held
    assert corpus_text(0, "train", 300, held) == corpus_text(0, "train", 300, held)
    assert corpus_text(0, "train", 300, held) != corpus_text(1, "train", 300, held)
    assert build_all_tasks(12345)[0] != tasks


def test_shipped_task_files_are_the_generator_output(tasks_and_keys):
    tasks, _ = tasks_and_keys
    for task, splits in tasks.items():
        for split, docs in splits.items():
            lines = (TASKS_DIR / task / f"{split}.jsonl").read_text("utf-8").splitlines()
            assert [json.loads(line) for line in lines] == docs, (task, split)


def test_task_items_never_occur_in_training_calibration_or_ppl_text(tasks_and_keys, shipped_seed):
    tasks, held = tasks_and_keys
    # calibration.txt is the start of the training stream; check a later stretch of it as well
    later = itertools.islice(corpus_docs(shipped_seed, "train", 8000, held), 5000, None)
    text = "\n".join([*later, CORPUS_PATH.read_text("utf-8"), PPL_PATH.read_text("utf-8")])
    for task, splits in tasks.items():
        for split in ("validation", "test"):
            for doc in splits[split]:
                probe = heldout_probe(TASK_KINDS[task], doc)
                assert probe not in text, (task, split, probe)


def test_shipped_yamls_use_relative_data_files():
    for task in TASK_NAMES:
        text = (TASKS_DIR / f"{task}.yaml").read_text("utf-8")
        for split in SPLIT_SIZES:
            assert f"    {split}: {task}/{split}.jsonl\n" in text


def test_shipped_model_loads_offline_and_fits_ppl_text():
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, MistralForCausalLM

    from gradprune.assets.evaluate import token_windows

    assert (MODEL_DIR / "model.safetensors").stat().st_size <= 15 * 2**20
    assert not list(MODEL_DIR.glob("*.bin")) and not list(MODEL_DIR.glob("*.pt"))
    model = AutoModelForCausalLM.from_pretrained(MODEL_DIR).eval()
    tok = AutoTokenizer.from_pretrained(MODEL_DIR)
    assert isinstance(model, MistralForCausalLM)
    cfg = model.config
    assert cfg.num_key_value_heads < cfg.num_attention_heads
    assert cfg.tie_word_embeddings
    assert tok.eos_token == tok.bos_token and tok.pad_token not in (None, tok.eos_token)
    assert len(tok) <= cfg.vocab_size
    windows = token_windows(tok, PPL_PATH.read_text("utf-8")[:60_000], 128)[:32]
    with torch.no_grad():
        loss = model(input_ids=windows, labels=windows).loss.item()
    assert loss < math.log(cfg.vocab_size) / 3, loss


@pytest.fixture(scope="module")
def lm_eval_tasks(tmp_path_factory):
    """Every embedded task loaded by lm-eval from a rendered copy with absolute data files."""
    from lm_eval.tasks import TaskManager

    include = render_tasks(TASKS_DIR, tmp_path_factory.mktemp("tasks"))
    manager = TaskManager(include_path=str(include), include_defaults=False)
    return manager.load(TASK_NAMES)["tasks"]


@pytest.mark.parametrize("task", TASK_NAMES)
def test_task_yaml_loads_in_lm_eval_with_consistent_balanced_targets(lm_eval_tasks, task):
    t = lm_eval_tasks[task]
    docs = list(t.test_docs())
    assert len(docs) == SPLIT_SIZES["test"]
    assert len(list(t.validation_docs())) == SPLIT_SIZES["validation"]
    golds = []
    for doc in docs:
        choices = t.doc_to_choice(doc)
        # WinoGrande-style partial scoring: the gold index comes from doc_to_text, one context per option
        gold = t.doc_to_text(doc) if t.multiple_input else t.doc_to_target(doc)
        assert isinstance(gold, int) and 0 <= gold < len(choices), (doc, gold)
        assert len(set(choices)) == len(choices)
        golds.append(gold)
    counts = Counter(golds)
    assert len(counts) == len(t.doc_to_choice(docs[0]))
    assert max(counts.values()) - min(counts.values()) <= 0.05 * len(docs), counts


@pytest.mark.slow
def test_shipped_model_beats_chance_under_lm_eval():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from gradprune.assets.evaluate import evaluate_tasks

    model = AutoModelForCausalLM.from_pretrained(MODEL_DIR).eval()
    tok = AutoTokenizer.from_pretrained(MODEL_DIR)
    res = evaluate_tasks(model, tok, limit=100)
    chance = {"tiny_boolq": 0.5, "tiny_piqa": 0.5, "tiny_hellaswag": 0.25, "tiny_winogrande": 0.5, "tiny_arc": 0.25}
    margin = sum(res[t]["acc"] - chance[t] for t in TASK_NAMES) / len(TASK_NAMES)
    assert margin >= 0.15, res
