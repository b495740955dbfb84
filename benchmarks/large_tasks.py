"""Larger test splits of the embedded tasks, for benchmarks that need more than 300 items per task.

The shipped tasks have 300 test items each (enough for tests and the demo); the real zero-shot tasks
have 500 (OpenBookQA) to 10,042 (HellaSwag). A benchmark of evaluation-budget decisions needs a
realistic number of items, since the noise at a fraction of a task falls with the items scored, not
with the fraction. The test split here is the shipped test items plus new ones drawn from the same
generator (another random stream) up to ``n_test`` items, never one whose prompt is a shipped item's
(any split) or whose held-out probe occurs in the model's training stream, calibration or perplexity
text; written as lm-eval tasks (shipped train/validation splits, the larger test split) under ``out``:

    python benchmarks/large_tasks.py --out results/large_tasks [--n_test 2400]

Some generators have fewer distinct items than asked for; the counts are printed and kept in
``out/counts.json``.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

from gradprune.assets import CORPUS_PATH, PPL_PATH
from gradprune.assets.corpus import corpus_docs
from gradprune.assets.task_files import TASK_KINDS, build_all_tasks, heldout_probe, prompt_key, write_tasks
from gradprune.assets.task_items import BUILDERS
from gradprune.assets.world import rng_for

TRAIN_DOCS = 80_000  # more documents than the 3.3 M training tokens came from (about 48,000)
MAX_DRAWS = 200_000  # per task: stop drawing when the generator has no more distinct items


def training_text(seed: int, held_out) -> str:
    """Every text the model saw or is measured on: the training stream (a superset), calibration, ppl."""
    import itertools

    docs = itertools.islice(corpus_docs(seed, "train", 10**9, held_out), TRAIN_DOCS)
    return "\n".join([*docs, CORPUS_PATH.read_text("utf-8"), PPL_PATH.read_text("utf-8")])


def large_test_items(seed: int, task: str, n_test: int, shipped: dict[str, list[dict]], text: str) -> list[dict]:
    """The shipped test items, then new ones (answers balanced, uncontaminated: see the module doc) up to
    ``n_test`` in all."""
    kind = TASK_KINDS[task]
    build, n_choices = BUILDERS[kind]
    rng = rng_for(seed, f"task:{task}:large-test")
    seen = {prompt_key(kind, d) for docs in shipped.values() for d in docs}
    docs: list[dict] = []
    for _ in range(MAX_DRAWS):
        if len(docs) + len(shipped["test"]) >= n_test:
            break
        _, doc = build(rng, len(docs) % n_choices)
        key = prompt_key(kind, doc)
        if key in seen:
            continue
        seen.add(key)
        if heldout_probe(kind, doc) not in text:
            docs.append(doc)
    random.Random(f"{seed}:{task}:large-test").shuffle(docs)
    return shipped["test"] + docs


def build_large_tasks(out: Path, n_test: int, seed: int = 0) -> dict[str, int]:
    """Write the tasks under ``out``; returns the test items per task."""
    tasks, held_out = build_all_tasks(seed)
    text = training_text(seed, held_out)
    large = {}
    for task, splits in tasks.items():
        large[task] = {"train": splits["train"], "validation": splits["validation"],
                       "test": large_test_items(seed, task, n_test, splits, text)}
    write_tasks(large, out)
    counts = {t: len(s["test"]) for t, s in large.items()}
    (out / "counts.json").write_text(json.dumps(counts, indent=1))
    return counts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="results/large_tasks")
    ap.add_argument("--n_test", type=int, default=2400)
    args = ap.parse_args()
    print(build_large_tasks(Path(args.out), args.n_test))


if __name__ == "__main__":
    main()
