"""The examples recovery trains on, tokenized once before training, and how they are batched.

Instruction records (a source with ``records()``, e.g. :class:`gradprune.data.instructions.InstructionSet`)
are tokenized as LLM-Pruner's ``post_training.py`` does: prompt + response truncated to ``cutoff_len``
tokens, EOS appended when there is room, and (unless ``train_on_inputs``) the prompt's tokens left out of
the loss. A record whose prompt fills the whole cutoff teaches nothing and is dropped (counted). Any
other source is plain text: its documents joined by EOS and cut into windows of ``cutoff_len`` tokens,
every token learned. Micro-batches are padded on the right; padding is masked out of attention and loss.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch

from gradprune.errors import DataError

IGNORE = -100  # the label transformers' loss skips


@dataclass
class Example:
    """One training sequence: token ids and the labels the loss compares against (IGNORE: not learned)."""

    input_ids: list[int]
    labels: list[int]


@dataclass
class TrainingSet:
    """The tokenized examples and how they were made (recorded in run.json)."""

    examples: list[Example]
    provenance: dict[str, Any] = field(default_factory=dict)

    @property
    def tokens(self) -> int:
        """Tokens in one pass over the examples."""
        return sum(len(e.input_ids) for e in self.examples)


def build_training_set(source: Any, tokenizer: Any, cutoff_len: int, train_on_inputs: bool,
                       max_examples: int | None = None) -> TrainingSet:
    """The examples of ``source`` (at most ``max_examples``: what the training will reach)."""
    if hasattr(source, "records"):
        out = _instruction_examples(source, tokenizer, cutoff_len, train_on_inputs, max_examples)
    else:
        out = _text_windows(source, tokenizer, cutoff_len, max_examples)
    if not out.examples:
        raise DataError(f"recovery.dataset ({source.describe()}) gives no example to train on "
                        f"(cutoff_len={cutoff_len}): {out.provenance}")
    out.provenance.update(source=source.describe(), cutoff_len=cutoff_len, examples=len(out.examples),
                          tokens_per_epoch=out.tokens)
    return out


def _instruction_examples(source: Any, tokenizer: Any, cutoff: int, train_on_inputs: bool,
                          limit: int | None) -> TrainingSet:
    template, eos = source.template, tokenizer.eos_token_id
    examples, read, no_target, truncated = [], 0, 0, 0
    records = source.records()
    try:
        for record in records:
            read += 1
            ids = tokenizer(template.full_text(record), truncation=True, max_length=cutoff)["input_ids"]
            truncated += len(ids) >= cutoff
            if eos is not None and ids[-1] != eos and len(ids) < cutoff:
                ids.append(eos)
            labels = list(ids)
            if not train_on_inputs:
                n_prompt = len(tokenizer(template.prompt(record), truncation=True, max_length=cutoff)["input_ids"])
                labels[:n_prompt] = [IGNORE] * min(n_prompt, len(labels))
            if all(t == IGNORE for t in labels[1:]):  # the first label is never predicted
                no_target += 1
                continue
            examples.append(Example(ids, labels))
            if limit is not None and len(examples) >= limit:
                break
    finally:
        records.close()
    return TrainingSet(examples, {"kind": "instructions", "template": template.name, "records_read": read,
                                  "dropped_prompt_fills_cutoff": no_target, "truncated": truncated,
                                  "train_on_inputs": train_on_inputs})


def _text_windows(source: Any, tokenizer: Any, cutoff: int, limit: int | None) -> TrainingSet:
    from gradprune.data.windows import read_tokens

    need = math.inf if limit is None else limit * cutoff
    docs = read_tokens(source, tokenizer, need)
    eos = tokenizer.eos_token_id
    stream = [t for doc in docs for t in (doc + ([eos] if eos is not None else []))]
    n = len(stream) // cutoff if limit is None else min(limit, len(stream) // cutoff)
    examples = [Example(stream[i * cutoff:(i + 1) * cutoff], stream[i * cutoff:(i + 1) * cutoff]) for i in range(n)]
    return TrainingSet(examples, {"kind": "text windows", "documents_read": len(docs), "stream_tokens": len(stream)})


def pad_batch(examples: list[Example], pad_id: int) -> dict[str, Any]:
    """A micro-batch, right-padded: ``input_ids``, ``attention_mask``, ``labels`` and (plain ints, counted
    on the host so that no device sync is needed) ``tokens`` and ``trained_tokens``."""
    width = max(len(e.input_ids) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for i, e in enumerate(examples):
        n = len(e.input_ids)
        ids[i, :n] = torch.tensor(e.input_ids)
        labels[i, :n] = torch.tensor(e.labels)
        mask[i, :n] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels,
            "tokens": sum(len(e.input_ids) for e in examples),
            "trained_tokens": sum(sum(t != IGNORE for t in e.labels[1:]) for e in examples)}
