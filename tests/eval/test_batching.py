"""Evaluation batches from a byte budget: vocabulary × tokens × bytes, one rule for perplexity and lm-eval."""

from __future__ import annotations

import pytest
import torch

from gradprune.eval.batching import MAX_SEQUENCES, lm_eval_rows, sequences_per_batch
from gradprune.eval.perplexity import ppl_batch_size
from gradprune.recipe import TrainerSection
from gradprune.trainer import float32_matmul_precision
from tests.conftest import make_model

GIB = 2**30


def test_the_batch_follows_vocabulary_tokens_and_bytes():
    # 20 GiB for 128-token windows, fp32 logits + their log-softmax (8 B per entry)
    mistral = sequences_per_batch(20 * GIB, 128, 32768, 8)
    llama3 = sequences_per_batch(20 * GIB, 128, 128256, 8)
    assert mistral == 20 * GIB // (128 * 32768 * 8) == 640
    assert llama3 == 20 * GIB // (128 * 128256 * 8) == 163
    assert sequences_per_batch(20 * GIB, 2048, 32768, 8) == 40
    assert sequences_per_batch(1, 2048, 32768, 8) == 1  # never below one sequence
    assert sequences_per_batch(10**15, 16, 1000, 8) == MAX_SEQUENCES
    assert sequences_per_batch(GIB, 128, 32768, 8, bytes_per_token=32768 * 8) == GIB // (128 * 32768 * 16)


def test_perplexity_auto_batch_uses_the_budget_and_the_models_dtype():
    model = make_model(vocab_size=1000)
    assert ppl_batch_size("auto", 128, 1000, model) == 64  # CPU: the former fixed budget
    assert ppl_batch_size(5, 128, 1000, model, budget=GIB) == 5
    # fp32 logits, their flattened copy and log-softmax; one layer's activations (h 64, q 64, kv 16, mlp 96)
    per_token = 1000 * (4 + 4 + 4) + (4 * 64 + 2 * 64 + 2 * 16 + 3 * 96) * 4
    assert ppl_batch_size("auto", 128, 1000, model, budget=GIB) == min(MAX_SEQUENCES, GIB // (128 * per_token))
    bf16 = make_model(vocab_size=1000).to(torch.bfloat16)
    per_token16 = 1000 * (2 + 4 + 4) + (4 * 64 + 2 * 64 + 2 * 16 + 3 * 96) * 2  # bf16 logits, fp32 copy, log-softmax
    assert ppl_batch_size("auto", 512, 1000, bf16, budget=GIB // 4) == GIB // 4 // (512 * per_token16)


def test_lm_eval_rows_follow_the_budget_at_the_requests_length():
    model = make_model(vocab_size=32768)
    assert lm_eval_rows(model, 300) is None  # CPU: lm-eval searches as it does
    per_token = 32768 * 2 * 4 + (4 * 64 + 2 * 64 + 2 * 16 + 3 * 96) * 4  # logits, log-softmax (fp32), activations
    assert lm_eval_rows(model, 300, budget=8 * GIB) == 8 * GIB // (300 * per_token)
    assert lm_eval_rows(model, 30, budget=8 * GIB, cap=100) == 100


def test_the_budgeted_lm_eval_batch_needs_no_trial_forward_pass(monkeypatch):
    """On a GPU (stood in for by a budget) lm-eval's batch-size search runs no forward pass: the size comes
    from the budget at the longest request's length."""
    from gradprune.eval import batching, zeroshot
    from tests.conftest import make_tokenizer

    model = make_model(vocab_size=300)
    monkeypatch.setattr(batching, "device_budget", lambda device, fraction=0.5: 64 * 2**20)
    lm = zeroshot.make_lm(model, make_tokenizer("a b c d e " * 50), "auto")
    assert type(lm).__name__ == "BudgetedHFLM" and lm.max_batch_size == MAX_SEQUENCES
    calls = []
    model.register_forward_hook(lambda *a: calls.append(1))
    size = lm._detect_batch_size([("x", [1] * 40, [2] * 9)], 0)
    assert calls == [] and size == lm_eval_rows(model, 48, budget=64 * 2**20)
    assert zeroshot.make_lm(model, make_tokenizer("a b c d e " * 50), "auto", 12).max_batch_size == 12


@pytest.mark.parametrize("precision,setting,expected", [
    ("bf16-mixed", "auto", "high"), ("32-true", "auto", "highest"), ("bf16-true", "auto", "highest"),
    ("32-true", "medium", "medium"),
])
def test_float32_matmul_precision_follows_the_recipe_on_cuda_only(monkeypatch, precision, setting, expected):
    cfg = TrainerSection(accelerator="cpu", precision=precision, matmul_precision=setting)
    before = torch.get_float32_matmul_precision()
    assert float32_matmul_precision(cfg, "cpu") == before  # the CPU is left alone
    calls = []
    monkeypatch.setattr(torch, "set_float32_matmul_precision", calls.append)
    float32_matmul_precision(cfg, "cuda:0")
    assert calls == [expected]
