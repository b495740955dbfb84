"""Shared fixtures: tiny causal LMs built from a config, a tokenizer trained in milliseconds, a corpus."""

from __future__ import annotations

import contextlib
import os
import random
import tempfile

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
# tests never read or fill the user's dense-metric cache (subprocesses inherit this)
os.environ["GRADPRUNE_CACHE"] = tempfile.mkdtemp(prefix="gradprune-test-cache-")

WORDS = ["the", "cat", "dog", "bird", "red", "blue", "green", "owns", "has", "keeps", "a", "tool", "box", "house", "tree", "river", "big", "small", "runs", "jumps", "sits", "near", "under", "over", "one", "two", "three", "four", "five", "and", "but", "so", "then"]


def make_corpus(n_docs: int = 300, seed: int = 0) -> str:
    """Blank-line separated pseudo-sentences."""
    rng = random.Random(seed)
    docs = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(30, 90))) for _ in range(n_docs)]
    return "\n\n".join(docs)


def make_tokenizer(text: str, vocab_size: int = 300):
    """A byte-level BPE tokenizer trained on ``text`` and wrapped for transformers."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<eos>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator([text], trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>", pad_token="<eos>")


def make_model(arch: str = "mistral", vocab_size: int = 300, seed: int = 0, **kw):
    """A tiny randomly initialised llama / mistral / qwen2 causal LM (GQA: 8 query, 2 KV heads)."""
    import torch
    import transformers as tf

    cfg_cls, model_cls = {
        "mistral": (tf.MistralConfig, tf.MistralForCausalLM),
        "llama": (tf.LlamaConfig, tf.LlamaForCausalLM),
        "qwen2": (tf.Qwen2Config, tf.Qwen2ForCausalLM),
    }[arch]
    args = dict(vocab_size=vocab_size, hidden_size=64, intermediate_size=96, num_hidden_layers=4,
                num_attention_heads=8, num_key_value_heads=2, max_position_embeddings=256,
                tie_word_embeddings=True)
    args.update(kw)
    torch.manual_seed(seed)
    return model_cls(cfg_cls(**args)).eval()


@pytest.fixture(scope="session")
def corpus_file(tmp_path_factory):
    """A local calibration text file."""
    p = tmp_path_factory.mktemp("corpus") / "corpus.txt"
    p.write_text(make_corpus(), encoding="utf-8")
    return p


@pytest.fixture(scope="session")
def tokenizer(corpus_file):
    """Tokenizer trained on the corpus."""
    return make_tokenizer(corpus_file.read_text())


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory, tokenizer):
    """A saved tiny Mistral model + tokenizer directory."""
    d = tmp_path_factory.mktemp("tiny_mistral")
    m = make_model("mistral", vocab_size=len(tokenizer))
    m.save_pretrained(d)
    tokenizer.save_pretrained(d)
    return d


@pytest.fixture
def recipe_args(model_dir, corpus_file, tmp_path):
    """Overrides that point the tiny recipe at the test model and corpus, offline, no eval."""
    return [f"model.name_or_path={model_dir}", "calibration.dataset.name=text_file",
            f"calibration.dataset.path={corpus_file}", "calibration.num_samples=16", "calibration.seq_len=32",
            "calibration.batch_size=4", "eval.run=none", f"output.dir={tmp_path / 'out'}",
            "pruning.attention_layers=[0,4]", "pruning.mlp_layers=[0,4]"]


@pytest.fixture
def register():
    """``register(registry, name, target)``: a plugin registered for this test only
    (:meth:`gradprune.registry.Registry.registered`, left when the test ends)."""
    with contextlib.ExitStack() as stack:
        yield lambda registry, name, target, **kw: stack.enter_context(registry.registered(name, target, **kw))
