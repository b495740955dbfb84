"""Held-out perplexity and lm-eval accuracy of a model on the embedded text and tasks."""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

from gradprune.assets import PPL_PATH, TASK_NAMES, TASKS_DIR


def token_windows(tokenizer, text: str, seq_len: int):
    """Non-overlapping `seq_len`-token windows of `text` as a LongTensor (the ragged tail is dropped)."""
    import torch

    ids = torch.tensor(tokenizer(text)["input_ids"], dtype=torch.long)
    n = ids.numel() // seq_len
    return ids[: n * seq_len].view(n, seq_len)


def perplexity(model, tokenizer, text: str | None = None, seq_len: int = 128, batch_size: int = 32) -> float:
    """exp(mean next-token NLL) over non-overlapping windows of `text` (default: the shipped ppl.txt)."""
    import torch

    text = PPL_PATH.read_text("utf-8") if text is None else text
    windows = token_windows(tokenizer, text, seq_len)
    total, count = 0.0, 0
    model.eval()
    with torch.no_grad():
        for batch in windows.split(batch_size):
            logits = model(input_ids=batch).logits[:, :-1].float()
            nll = torch.nn.functional.cross_entropy(
                logits.reshape(-1, logits.size(-1)), batch[:, 1:].reshape(-1), reduction="sum"
            )
            total += nll.item()
            count += batch[:, 1:].numel()
    return math.exp(total / count)


def evaluate_tasks(model, tokenizer, tasks: Sequence[str] = TASK_NAMES, batch_size: int = 32,
                   limit: int | None = None, tasks_dir: Path = TASKS_DIR) -> dict[str, dict[str, float]]:
    """lm-eval zero-shot accuracy on the embedded tasks: {task: {"acc": .., "acc_norm": ..}}."""
    from gradprune.assets.task_files import render_tasks

    # Nothing may be fetched: the tasks read local JSONL files only.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    with tempfile.TemporaryDirectory() as tmp:
        include = render_tasks(Path(tasks_dir), Path(tmp))
        manager = TaskManager(include_path=str(include), include_defaults=False)
        lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size, device="cpu")
        res = lm_eval.simple_evaluate(model=lm, tasks=list(tasks), task_manager=manager, bootstrap_iters=0,
                                      limit=limit, verbosity="ERROR")
    out = {}
    for task in tasks:
        row = res["results"][task]
        out[task] = {"acc": row["acc,none"]}
        if "acc_norm,none" in row:
            out[task]["acc_norm"] = row["acc_norm,none"]
    return out
