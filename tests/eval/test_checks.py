"""check_eval_config: bad input fails early with an EvalError that says what to change."""

from __future__ import annotations

import pytest

from gradprune.errors import EvalError, RecipeError
from gradprune.eval import check_eval_config
from gradprune.recipe import EvalSection, validate_dict


def test_seq_len_above_max_positions(eval_model, eval_cfg):
    check_eval_config(eval_cfg(run="ppl", ppl_datasets=["wikitext2"], ppl_seq_len=256), eval_model.config)
    with pytest.raises(EvalError, match=r"2048 is longer than the model's max_position_embeddings \(256\)"):
        check_eval_config(eval_cfg(run="ppl", ppl_seq_len=[128, 2048]), eval_model.config)


def test_seq_len_of_one_token(eval_cfg):
    with pytest.raises(EvalError, match="at least 2 tokens"):
        check_eval_config(eval_cfg(run="ppl", ppl_seq_len=1), None)


def test_unknown_ppl_data_set_and_key_clash(eval_cfg, tmp_path):
    with pytest.raises(EvalError, match="'wikitext3' is neither a known data set"):
        check_eval_config(eval_cfg(run="ppl", ppl_datasets=["wikitext3"]), None)
    for sub in ("a", "b"):
        (tmp_path / sub).mkdir()
        (tmp_path / sub / "text.txt").write_text("x")
    clash = [str(tmp_path / "a" / "text.txt"), str(tmp_path / "b" / "text.txt")]
    with pytest.raises(EvalError, match="would both be reported as ppl_text"):
        check_eval_config(eval_cfg(run="ppl", ppl_datasets=clash), None)


def test_unknown_task_in_the_task_folder_is_caught_before_any_work(eval_cfg, monkeypatch):
    from gradprune.eval import tasks

    # answer the fallback to lm-eval's own tasks with a small index (indexing them all takes seconds)
    real = tasks._task_manager
    monkeypatch.setattr(tasks, "_task_manager", lambda path, defaults: real(path, False))
    with pytest.raises(EvalError, match="unknown task 'hellaswg'.*Did you mean 'hellaswag'"):
        check_eval_config(eval_cfg(run="zeroshot", tasks=["piqa", "hellaswg"]), None)


def test_duplicate_tasks_empty_lists_and_run_none(eval_cfg):
    with pytest.raises(EvalError, match="piqa listed more than once"):
        check_eval_config(eval_cfg(run="zeroshot", tasks=["piqa", "piqa"]), None)
    with pytest.raises(EvalError, match="eval.tasks is empty"):
        check_eval_config(eval_cfg(run="zeroshot", tasks=[]), None)
    with pytest.raises(EvalError, match="eval.ppl_datasets is empty"):
        check_eval_config(eval_cfg(run="ppl", ppl_datasets=[]), None)
    check_eval_config(eval_cfg(run="none", tasks=["no_such_task"], ppl_datasets=["nope"]), None)


def test_limit_at_or_below_zero_is_rejected():
    with pytest.raises(RecipeError, match="eval.limit: limit must be > 0"):
        validate_dict({"eval": {"limit": 0}}, "recipe.yaml")
    cfg = EvalSection.model_construct(**{**EvalSection().model_dump(), "run": "zeroshot", "limit": -1})
    with pytest.raises(EvalError, match="eval.limit must be > 0"):
        check_eval_config(cfg, None)


def test_load_data_reports_an_offline_data_set_early(eval_cfg):
    with pytest.raises(EvalError, match="'ptb'.*HF_DATASETS_OFFLINE"):
        check_eval_config(eval_cfg(run="ppl", ppl_datasets=["ptb"]), None, load_data=True)
