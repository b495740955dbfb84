"""Build the embedded tasks' splits and write them as lm-eval task YAMLs over local JSONL files.

The YAMLs name their data files relative to their own folder (`tiny_piqa/test.jsonl`), so the asset
folder can move. lm-eval resolves `data_files` against the working directory, so a copy with absolute
paths is rendered before loading (`render_tasks`).
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

from gradprune.assets.task_items import BUILDERS
from gradprune.assets.world import rng_for

# a `    test: tiny_piqa/test.jsonl` line under data_files
_DATA_FILE_LINE = re.compile(r"^(\s+(?:train|validation|test): )(\S+\.jsonl)$", re.MULTILINE)

SPLIT_SIZES = {"train": 100, "validation": 100, "test": 300}

# task name -> item kind in task_items.BUILDERS
TASK_KINDS = {
    "tiny_boolq": "boolq",
    "tiny_piqa": "piqa",
    "tiny_hellaswag": "hellaswag",
    "tiny_winogrande": "winogrande",
    "tiny_arc": "arc",
}

_MC = "output_type: multiple_choice\ntraining_split: train\nvalidation_split: validation\ntest_split: test\n"
_ACC = "  - metric: acc\n    aggregation: mean\n    higher_is_better: true\n"
_ACC_NORM = "  - metric: acc_norm\n    aggregation: mean\n    higher_is_better: true\n"

# The prompt lines follow the real tasks' lm-eval YAMLs. tiny_winogrande uses WinoGrande's partial
# scoring: one context per option (text up to the blank, option filled in), the same continuation.
PROMPTS = {
    "tiny_boolq": ('doc_to_text: "{{passage}}\\nQuestion: {{question}}?\\nAnswer:"\n'
                   "doc_to_target: label\n"
                   'doc_to_choice: ["no", "yes"]\n', _ACC),
    "tiny_piqa": ('doc_to_text: "Question: {{goal}}\\nAnswer:"\n'
                  "doc_to_target: label\n"
                  'doc_to_choice: "{{[sol1, sol2]}}"\n', _ACC + _ACC_NORM),
    "tiny_hellaswag": ('doc_to_text: "{{activity_label}}: {{ctx}}"\n'
                       'doc_to_target: "{{label}}"\n'
                       'doc_to_choice: "{{endings}}"\n', _ACC + _ACC_NORM),
    "tiny_winogrande": ('doc_to_text: "{{answer | int - 1}}"\n'
                        "doc_to_target: \"{{sentence.split('_')[1].strip()}}\"\n"
                        "doc_to_choice: \"{{[sentence.split('_')[0] + option1, sentence.split('_')[0] + option2]}}\"\n",
                        _ACC),
    "tiny_arc": ('doc_to_text: "Question: {{question}}\\nAnswer:"\n'
                 'doc_to_target: "{{choices.label.index(answerKey)}}"\n'
                 'doc_to_choice: "{{choices.text}}"\n', _ACC + _ACC_NORM),
}


def prompt_key(kind: str, doc: dict) -> str:
    """The text that identifies an item's prompt, for de-duplication across splits."""
    if kind == "boolq":
        return doc["passage"] + "|" + doc["question"]
    if kind == "hellaswag":
        return doc["activity_label"] + "|" + doc["ctx"]
    fields = {"piqa": "goal", "winogrande": "sentence", "arc": "question"}
    return doc[fields[kind]]


def heldout_probe(kind: str, doc: dict) -> str:
    """A string that must not occur in any training or calibration text for this item."""
    if kind == "boolq":
        return doc["passage"]
    if kind == "hellaswag":
        return f"{doc['activity_label']}: {doc['ctx']}"
    if kind == "winogrande":
        right = doc["option1"] if doc["answer"] == "1" else doc["option2"]
        return doc["sentence"].replace("_", right)
    return "Question: " + (doc["goal"] if kind == "piqa" else doc["question"])


def build_split_items(seed: int, task: str) -> tuple[dict[str, list[dict]], set[str]]:
    """Draw every split of one task (answers balanced per split) and the keys they reserve."""
    kind = TASK_KINDS[task]
    build, n_choices = BUILDERS[kind]
    rng = rng_for(seed, f"task:{task}")
    seen: set[str] = set()
    keys: set[str] = set()
    splits: dict[str, list[dict]] = {}
    for split, size in SPLIT_SIZES.items():
        docs: list[dict] = []
        while len(docs) < size:
            key, doc = build(rng, len(docs) % n_choices)
            if prompt_key(kind, doc) in seen:
                continue
            seen.add(prompt_key(kind, doc))
            keys.add(key)
            docs.append(doc)
        random.Random(f"{seed}:{task}:{split}").shuffle(docs)
        splits[split] = docs
    return splits, keys


def build_all_tasks(seed: int) -> tuple[dict[str, dict[str, list[dict]]], dict[str, set[str]]]:
    """Every task's splits, and per item kind the keys the training text must avoid."""
    tasks, held_out = {}, {}
    for task, kind in TASK_KINDS.items():
        tasks[task], held_out[kind] = build_split_items(seed, task)
    return tasks, held_out


def task_yaml(task: str, data_files: dict[str, str]) -> str:
    """The lm-eval YAML of one embedded task, with the given data file paths."""
    prompt, metrics = PROMPTS[task]
    files = "".join(f"    {split}: {path}\n" for split, path in data_files.items())
    return (f"task: {task}\ndataset_path: json\ndataset_name: null\ndataset_kwargs:\n  data_files:\n{files}"
            f"{_MC}{prompt}metric_list:\n{metrics}metadata:\n  version: 1.0\n")


def write_tasks(tasks: dict[str, dict[str, list[dict]]], tasks_dir: Path) -> None:
    """Write `<task>/<split>.jsonl` and `<task>.yaml` (relative data_files) under `tasks_dir`."""
    tasks_dir.mkdir(parents=True, exist_ok=True)
    for task, splits in tasks.items():
        (tasks_dir / task).mkdir(exist_ok=True)
        for split, docs in splits.items():
            lines = "".join(json.dumps(d, ensure_ascii=False) + "\n" for d in docs)
            (tasks_dir / task / f"{split}.jsonl").write_text(lines, encoding="utf-8")
        files = {split: f"{task}/{split}.jsonl" for split in splits}
        (tasks_dir / f"{task}.yaml").write_text(task_yaml(task, files), encoding="utf-8")


def render_tasks(tasks_dir: Path, dst: Path) -> Path:
    """Copy the task YAMLs into `dst` with absolute data file paths; returns `dst` (an include_path)."""
    dst.mkdir(parents=True, exist_ok=True)
    root = tasks_dir.resolve()
    for yaml_path in sorted(tasks_dir.glob("*.yaml")):
        text = _DATA_FILE_LINE.sub(lambda m: m.group(1) + str(root / m.group(2)), yaml_path.read_text("utf-8"))
        (dst / yaml_path.name).write_text(text, encoding="utf-8")
    return dst
