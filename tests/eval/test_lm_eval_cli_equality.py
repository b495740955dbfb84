"""The in-memory numbers are exactly what lm-eval's own CLI prints for the same saved model and settings."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from gradprune.eval import evaluate
from gradprune.eval.tasks import render_task_dir
from tests.eval.conftest import FIXTURE_TASKS, REAL_TASKS, build_model, build_tokenizer, fixture_text

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    """(model, tokenizer, folder): the embedded model when it has been built, else the test model saved."""
    try:
        from gradprune.assets import MODEL_DIR
    except ImportError:
        MODEL_DIR = None  # noqa: N806
    if MODEL_DIR is not None and (Path(MODEL_DIR) / "config.json").is_file():
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        model = AutoModelForCausalLM.from_pretrained(MODEL_DIR, dtype=torch.float32).eval()
        return model, AutoTokenizer.from_pretrained(MODEL_DIR), Path(MODEL_DIR)
    folder = tmp_path_factory.mktemp("saved_model")
    tokenizer = build_tokenizer(fixture_text())
    model = build_model(len(tokenizer), seed=1)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return model, tokenizer, folder


def _cli_results(folder: Path, out: Path, tasks: list[str], batch_size: int, num_fewshot: int,
                 limit: int | None) -> dict:
    cmd = [sys.executable, "-m", "lm_eval", "run", "--model", "hf",
           "--model_args", f"pretrained={folder},dtype=float32", "--tasks", ",".join(tasks),
           "--include_path", str(render_task_dir(FIXTURE_TASKS)), "--device", "cpu",
           "--batch_size", str(batch_size), "--num_fewshot", str(num_fewshot), "--output_path", str(out)]
    if limit is not None:
        cmd += ["--limit", str(limit)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1",
           "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    (path,) = out.rglob("results_*.json")
    return json.loads(path.read_text())


@pytest.mark.parametrize(("batch_size", "num_fewshot", "limit"), [(4, 0, None), (3, 2, 6)])
def test_in_memory_equals_cli(saved_model, eval_cfg, tmp_path, batch_size, num_fewshot, limit):
    model, tokenizer, folder = saved_model
    cfg = eval_cfg(run="zeroshot", tasks=REAL_TASKS, batch_size=batch_size, num_fewshot=num_fewshot, limit=limit)
    mine = evaluate(model, tokenizer, cfg)
    cli = _cli_results(folder, tmp_path / "cli", REAL_TASKS, batch_size, num_fewshot, limit)
    compared = 0
    for task in REAL_TASKS:
        for metric in ("acc", "acc_norm"):
            if f"{metric},none" not in cli["results"][task]:
                assert f"{metric}_{task}" not in mine.metrics
                continue
            assert mine.metrics[f"{metric}_{task}"] == cli["results"][task][f"{metric},none"], (task, metric)
            assert mine.metrics[f"{metric}_{task}_stderr"] == cli["results"][task][f"{metric}_stderr,none"]
            compared += 1
        assert mine.info["zeroshot"]["n"][task] == cli["n-samples"][task]["effective"]
        assert mine.info["zeroshot"]["task_versions"][task] == cli["versions"][task]
    assert compared == 12  # acc for 7 tasks, acc_norm for 5
