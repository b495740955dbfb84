"""Task folders: rendering (lm_eval_tasks:// includes, relative data files, !function), name errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from gradprune.errors import EvalError
from gradprune.eval.tasks import (
    _unknown_task_message,
    lm_eval_tasks_root,
    render_task_dir,
    resolve_task_dir,
    task_manager_for,
)
from tests.eval.conftest import FIXTURE_TASKS, REAL_TASKS


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_render_rewrites_scheme_include_and_relative_data_files():
    out = render_task_dir(FIXTURE_TASKS)
    cfg = yaml.safe_load((out / "piqa" / "piqa.yaml").read_text())
    assert cfg["include"] == str(lm_eval_tasks_root() / "piqa" / "piqa.yaml")
    files = cfg["dataset_kwargs"]["data_files"]
    assert files == {s: str(FIXTURE_TASKS / "piqa" / f"{s}.jsonl") for s in ("train", "validation")}
    assert all(Path(p).is_file() for p in files.values())


def test_lm_eval_accepts_the_rendered_absolute_include():
    from lm_eval.tasks._yaml_loader import load_yaml

    cfg = load_yaml(render_task_dir(FIXTURE_TASKS) / "hellaswag" / "hellaswag.yaml", resolve_func=True)
    assert cfg["task"] == "hellaswag" and cfg["dataset_path"] == "json" and cfg["dataset_name"] is None
    assert callable(cfg["process_docs"])  # the packaged utils.process_docs, found next to the packaged YAML
    assert cfg["doc_to_text"] == "{{query}}"


def test_render_keeps_function_tags_sibling_includes_and_python_files(tmp_path):
    src = tmp_path / "tasks"
    _write(src / "helpers.py", "def to_text(doc):\n    return doc['q']\n")
    _write(src / "base.yaml", "output_type: multiple_choice\ndoc_to_text: !function helpers.to_text\n")
    _write(src / "sub" / "mine.yaml",
           "include: ../base.yaml\ntask: mine\ndataset_path: json\n"
           "dataset_kwargs:\n  data_files: [a.jsonl, /abs/b.jsonl]\n")
    out = render_task_dir(src.resolve())
    assert (out / "helpers.py").is_file()
    from lm_eval.tasks._yaml_loader import load_yaml

    mine = load_yaml(out / "sub" / "mine.yaml", resolve_func=True)
    assert mine["doc_to_text"]({"q": "question?"}) == "question?"  # !function kept, helpers.py copied
    mine = yaml.load((out / "sub" / "mine.yaml").read_text(), Loader=yaml.SafeLoader)
    assert mine["include"] == "../base.yaml"
    assert mine["dataset_kwargs"]["data_files"] == [str((src / "sub" / "a.jsonl").resolve()), "/abs/b.jsonl"]


def test_unknown_scheme_target_is_an_eval_error(tmp_path):
    _write(tmp_path / "t" / "x.yaml", "include: lm_eval_tasks://nope/nope.yaml\ntask: x\n")
    with pytest.raises(EvalError, match="no packaged task YAML"):
        render_task_dir((tmp_path / "t").resolve())


def test_fixture_folder_knows_the_seven_real_tasks_without_indexing_defaults():
    tm = task_manager_for(REAL_TASKS, str(FIXTURE_TASKS))
    assert set(REAL_TASKS) <= set(tm.all_tasks)
    assert len(tm.all_tasks) < 20  # lm-eval's thousands of default tasks were not indexed


def test_missing_task_dir_is_an_eval_error(tmp_path):
    with pytest.raises(EvalError, match="not a folder"):
        resolve_task_dir(str(tmp_path / "absent"))


def test_unknown_task_message_names_close_matches_and_the_folder():
    msg = _unknown_task_message("hellaswg", ["hellaswag", "piqa", "boolq"], "tasks/")
    assert "unknown task 'hellaswg'" in msg and "Did you mean 'hellaswag'" in msg and "'tasks/'" in msg
    assert "Did you mean" not in _unknown_task_message("zzz", ["hellaswag"], None)


@pytest.mark.slow  # the fallback indexes lm-eval's default tasks (6-8 s, more on a busy machine)
def test_unknown_task_lists_close_matches(tmp_path):
    _write(tmp_path / "t" / "tiny_piqa.yaml", "task: tiny_piqa\ndataset_path: json\noutput_type: multiple_choice\n")
    _write(tmp_path / "t" / "tiny_boolq.yaml", "task: tiny_boolq\ndataset_path: json\noutput_type: multiple_choice\n")
    # a name close to a task of the folder; the fallback to lm-eval's own tasks still does not know it
    with pytest.raises(EvalError, match=r"unknown task 'tiny_piqaa'.*Did you mean 'tiny_piqa'"):
        task_manager_for(["tiny_piqaa"], str(tmp_path / "t"))


def test_embedded_task_dir_is_the_shipped_one(monkeypatch):
    import gradprune.assets

    monkeypatch.setattr(gradprune.assets, "TASKS_DIR", FIXTURE_TASKS)
    assert resolve_task_dir("embedded") == FIXTURE_TASKS.resolve()
