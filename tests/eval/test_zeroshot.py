"""Zero-shot: flat metric names, the real tasks offline, data and mid-run failures as EvalError."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from gradprune.errors import EvalError
from gradprune.eval import evaluate
from gradprune.eval.tasks import task_manager_for
from gradprune.eval.zeroshot import flatten_results, load_tasks
from tests.eval.conftest import HAS_ACC_NORM, REAL_TASKS

ROWS = "".join(f'{{"q": "Is the sky blue? ({i})", "a": "yes", "b": "no", "label": {i % 2}}}\n' for i in range(4))


def _task_dir(tmp_path: Path, yaml_extra: str, py: str = "") -> Path:
    folder = tmp_path / "tasks"
    folder.mkdir()
    (folder / "data.jsonl").write_text(ROWS)
    if py:
        (folder / "hooks.py").write_text(py)
    (folder / "custom.yaml").write_text(
        "task: custom\ndataset_path: json\ndataset_name: null\n"
        "dataset_kwargs:\n  data_files:\n    test: data.jsonl\ntest_split: test\n"
        "output_type: multiple_choice\ndoc_to_target: label\ndoc_to_choice: '{{[a, b]}}'\n"
        "metric_list:\n  - metric: acc\n" + yaml_extra
    )
    return folder


def test_flatten_names_means_and_stderr():
    results = {
        "piqa": {"alias": "piqa", "acc,none": 0.5, "acc_stderr,none": 0.1, "acc_norm,none": 0.75,
                 "acc_norm_stderr,none": 0.2},
        "boolq": {"acc,none": 0.25, "acc_stderr,none": "N/A", "sample_len": 12},
        "gen": {"exact_match,strict-match": 0.1},
    }
    flat = flatten_results(results, ["piqa", "boolq", "gen"])
    assert flat == {
        "acc_piqa": 0.5, "acc_piqa_stderr": 0.1, "acc_norm_piqa": 0.75, "acc_norm_piqa_stderr": 0.2,
        "acc_boolq": 0.25, "exact_match_strict_match_gen": 0.1,
        "acc_mean": 0.375, "acc_norm_mean": 0.75,
    }


def test_two_real_tasks_in_memory(eval_model, eval_tokenizer, eval_cfg):
    eval_model.train()
    before = copy.deepcopy(eval_tokenizer.special_tokens_map)
    res = evaluate(eval_model, eval_tokenizer, eval_cfg(run="zeroshot", tasks=["piqa", "winogrande"]))
    m, info = res.metrics, res.info["zeroshot"]
    assert {"acc_piqa", "acc_norm_piqa", "acc_winogrande", "acc_mean", "acc_norm_mean"} <= set(m)
    assert "acc_norm_winogrande" not in m and "acc_winogrande_stderr" in m
    assert m["acc_mean"] == pytest.approx((m["acc_piqa"] + m["acc_winogrande"]) / 2)
    assert info["n"] == {"piqa": 12, "winogrande": 12} and info["requests"] == {"piqa": 24, "winogrande": 24}
    assert info["task_versions"] == {"piqa": 1.0, "winogrande": 1.0} and info["lm_eval_version"]
    assert set(info["seconds"]["model"]) == {"piqa", "winogrande"}
    assert eval_model.training and all(mod.training for mod in eval_model.modules())
    assert eval_tokenizer.special_tokens_map == before


def test_limit_is_passed_to_lm_eval(eval_model, eval_tokenizer, eval_cfg):
    res = evaluate(eval_model, eval_tokenizer, eval_cfg(run="zeroshot", tasks=["boolq"], limit=5))
    assert res.info["zeroshot"]["n"] == {"boolq": 5} and res.info["zeroshot"]["limit"] == 5


@pytest.mark.slow
def test_all_seven_real_tasks_offline(eval_model, eval_tokenizer, eval_cfg):
    res = evaluate(eval_model, eval_tokenizer, eval_cfg(run="zeroshot", tasks=REAL_TASKS, batch_size="auto"))
    for task in REAL_TASKS:
        assert 0.0 <= res.metrics[f"acc_{task}"] <= 1.0
        assert f"acc_{task}_stderr" in res.metrics
        assert (f"acc_norm_{task}" in res.metrics) == (task in HAS_ACC_NORM)
    assert res.info["zeroshot"]["n"] == dict.fromkeys(REAL_TASKS, 12)
    assert all(p.dtype == torch.float32 for p in eval_model.parameters())


def test_hub_data_set_offline_is_an_eval_error_with_the_hint(tmp_path):
    folder = tmp_path / "t"
    folder.mkdir()
    (folder / "hubtask.yaml").write_text(
        "task: hubtask\ndataset_path: someone/not_cached_here\noutput_type: multiple_choice\n"
        "test_split: test\ndoc_to_text: q\ndoc_to_target: 0\ndoc_to_choice: [a, b]\n")
    tm = task_manager_for(["hubtask"], str(folder))
    with pytest.raises(EvalError) as err:
        load_tasks(tm, ["hubtask"])
    msg = str(err.value)
    assert "'hubtask'" in msg and "someone/not_cached_here" in msg and "HF_DATASETS_OFFLINE" in msg


def test_missing_local_data_file_is_an_eval_error(tmp_path):
    folder = _task_dir(tmp_path, "doc_to_text: q\n")
    (folder / "data.jsonl").unlink()
    tm = task_manager_for(["custom"], str(folder))
    with pytest.raises(EvalError, match="task 'custom' cannot be loaded: its data file .*data.jsonl' does not exist"
                       ) as err:
        load_tasks(tm, ["custom"])
    assert "HF_DATASETS_OFFLINE" not in str(err.value)  # network access would not bring the file back


def test_broken_task_definition_is_an_eval_error_without_the_data_hint(tmp_path):
    # lm-eval renders the first document when it sets a task up: a broken prompt fails there
    folder = _task_dir(tmp_path, "doc_to_text: !function hooks.boom\n", "def boom(doc):\n    raise KeyError('q2')\n")
    tm = task_manager_for(["custom"], str(folder))
    with pytest.raises(EvalError, match="task 'custom' failed while being set up") as err:
        load_tasks(tm, ["custom"])
    assert "HF_DATASETS_OFFLINE" not in str(err.value)


@pytest.mark.parametrize(("hook", "phase"), [
    ("doc_to_text: !function hooks.boom\n", "building its requests"),
    ("doc_to_text: q\nprocess_results: !function hooks.boom2\n", "scoring its results"),
])
def test_task_failing_mid_run_is_an_eval_error_naming_it(tmp_path, eval_model, eval_tokenizer, eval_cfg,
                                                         hook, phase):
    # the first document is fine (lm-eval renders it while setting the task up), the second is not
    py = ("def boom(doc):\n    if doc['label']:\n        raise KeyError('no such field')\n    return doc['q']\n\n"
          "def boom2(doc, results):\n    raise ValueError('cannot score')\n")
    folder = _task_dir(tmp_path, hook, py)
    cfg = eval_cfg(run="zeroshot", tasks=["custom"], task_dir=str(folder))
    with pytest.raises(EvalError, match=f"task 'custom' failed while {phase}"):
        evaluate(eval_model, eval_tokenizer, cfg)
