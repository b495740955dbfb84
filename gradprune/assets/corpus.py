"""The training / calibration / perplexity text: a seeded mixture of narrative and task-shaped documents.

Task-shaped documents use the same prompt formats as the embedded tasks (with the answer filled in),
because a model this small only learns a yes/no or fill-the-blank format from many examples of it.
Any document whose key belongs to a held-out task item is redrawn, so evaluation items never occur
in the text the model is trained or calibrated on.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Mapping

from gradprune.assets.task_items import (
    arc_item,
    boolq_passage,
    boolq_question,
    hellaswag_item,
    hellaswag_story,
    piqa_item,
    winogrande_item,
)
from gradprune.assets.world import narrative_doc, rng_for

# Share of each document kind. The yes/no format gets the largest share: a single answer token per
# question is a thin training signal, and an earlier mixture left that task at chance.
MIXTURE = {
    "narrative": 0.15,
    "boolq": 0.35,
    "piqa": 0.08,
    "hellaswag": 0.12,
    "winogrande": 0.16,
    "arc": 0.14,
}

DOC_SEPARATOR = "\n\n"


def boolq_doc(rng: random.Random, held_out: set[str]) -> str | None:
    """A passage followed by several yes/no questions (answers drawn independently, 50/50), each in the task's prompt format."""
    passage, scene, goal, pair = boolq_passage(rng)
    if passage in held_out:
        return None
    lines = [passage]
    for _ in range(rng.randint(4, 6)):
        # Independent coin flips: a fixed pattern (yes, no, yes, ...) lets the model answer from the
        # previous answer instead of the passage, which left an earlier model at chance.
        label = rng.randrange(2)
        question = boolq_question(rng, scene, goal, pair, label)
        lines.append(f"Question: {question}?\nAnswer: {'yes' if label else 'no'}")
    return "\n".join(lines)


def piqa_doc(rng: random.Random, held_out: set[str]) -> str | None:
    """A goal with its right solution."""
    key, doc = piqa_item(rng, 1)
    return None if key in held_out else f"Question: {doc['goal']}\nAnswer: {doc['sol2']}"


def hellaswag_doc(rng: random.Random, held_out: set[str]) -> str | None:
    """A whole activity, step by step, for a person not paired with it in any task item."""
    key, doc = hellaswag_item(rng, 0)
    return None if key in held_out else hellaswag_story(doc["activity_label"], doc["ctx_b"])


def winogrande_doc(rng: random.Random, held_out: set[str]) -> str | None:
    """A comparison sentence with the blank filled by the right option."""
    key, doc = winogrande_item(rng, 0)
    return None if key in held_out else doc["sentence"].replace("_", doc["option1"])


def arc_doc(rng: random.Random, held_out: set[str]) -> str | None:
    """A question with its right answer."""
    key, doc = arc_item(rng, 0)
    return None if key in held_out else f"Question: {doc['question']}\nAnswer: {doc['choices']['text'][0]}"


MAKERS = {"boolq": boolq_doc, "piqa": piqa_doc, "hellaswag": hellaswag_doc, "winogrande": winogrande_doc,
          "arc": arc_doc}


def corpus_docs(seed: int, stream: str, n_docs: int, held_out: Mapping[str, set[str]]) -> Iterator[str]:
    """Yield `n_docs` documents of the mixture from the named random stream, avoiding held-out keys."""
    rng = rng_for(seed, f"corpus:{stream}")
    kinds, weights = list(MIXTURE), list(MIXTURE.values())
    produced = 0
    while produced < n_docs:
        kind = rng.choices(kinds, weights)[0]
        doc = narrative_doc(rng) if kind == "narrative" else MAKERS[kind](rng, held_out.get(kind, set()))
        if doc is not None:
            produced += 1
            yield doc


def corpus_text(seed: int, stream: str, n_docs: int, held_out: Mapping[str, set[str]]) -> str:
    """The documents of `corpus_docs` joined by blank lines, as written to the corpus files."""
    return DOC_SEPARATOR.join(corpus_docs(seed, stream, n_docs, held_out)) + "\n"
