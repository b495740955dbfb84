"""Fixtures for the eval tests: a tiny Mistral model and a byte-level BPE tokenizer trained on the
fixture task texts in milliseconds, the offline task folder, and an isolated dense-metric cache."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

FIXTURE_TASKS = Path(__file__).resolve().parents[1] / "fixtures" / "lm_eval_tasks"
REAL_TASKS = ["boolq", "piqa", "hellaswag", "winogrande", "arc_easy", "arc_challenge", "openbookqa"]
HAS_ACC_NORM = {"piqa", "hellaswag", "arc_easy", "arc_challenge", "openbookqa"}


def fixture_text() -> str:
    """Every string field of the fixture JSONL files, one per line (tokenizer training / ppl text)."""
    import json

    lines: list[str] = []

    def walk(value: object) -> None:
        if isinstance(value, str):
            lines.append(value)
        elif isinstance(value, dict):
            for v in value.values():
                walk(v)
        elif isinstance(value, list):
            for v in value:
                walk(v)

    for path in sorted(FIXTURE_TASKS.rglob("*.jsonl")):
        for row in path.read_text(encoding="utf-8").splitlines():
            walk(json.loads(row))
    return "\n".join(lines)


def build_tokenizer(text: str, vocab_size: int = 400):
    """Byte-level BPE trained on ``text`` (milliseconds), wrapped in PreTrainedTokenizerFast."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<s>", "</s>", "<pad>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(text.splitlines(), trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>")


def build_model(vocab_size: int, seed: int = 0, max_positions: int = 256):
    """The tiny Mistral of the eval tests (2 layers, 4 query / 2 KV heads), eval mode, fp32."""
    import torch
    from transformers import MistralConfig, MistralForCausalLM

    torch.manual_seed(seed)
    cfg = MistralConfig(vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=max_positions,
                        bos_token_id=0, eos_token_id=1, pad_token_id=2)
    return MistralForCausalLM(cfg).eval()


@pytest.fixture(autouse=True)
def _isolated(monkeypatch, tmp_path):
    """Offline, one torch thread (the cores are shared), and a dense cache of this test's own."""
    import torch

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("GRADPRUNE_CACHE", str(tmp_path / "gradprune_cache"))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def eval_tokenizer():
    """Tokenizer trained on the fixture task texts."""
    return build_tokenizer(fixture_text())


@pytest.fixture
def eval_model(eval_tokenizer):
    """A fresh tiny model per test (tests may change its mode or weights)."""
    return build_model(len(eval_tokenizer))


@pytest.fixture(scope="session")
def ppl_file(tmp_path_factory):
    """A local text file for perplexity (the fixture texts, ~8k tokens)."""
    path = tmp_path_factory.mktemp("ppl") / "held_out.txt"
    path.write_text(fixture_text(), encoding="utf-8")
    return path


@pytest.fixture
def eval_cfg():
    """EvalSection factory: ``eval_cfg(run="ppl", ...)`` validated like a recipe."""
    from gradprune.recipe import EvalSection

    def make(**kw):
        kw.setdefault("task_dir", str(FIXTURE_TASKS))
        kw.setdefault("batch_size", 4)
        return EvalSection(**kw)

    return make
