"""lm-eval task folders: render a task YAML folder for lm-eval, index it, resolve task names.

Two conventions make a task folder portable (the same folder works on every machine):

* ``dataset_kwargs.data_files`` paths are relative to the YAML's own folder;
* ``include: lm_eval_tasks://<path>`` names a YAML packaged with lm-eval, i.e.
  ``Path(lm_eval.tasks.__file__).parent / <path>`` (``lm_eval_tasks://piqa/piqa.yaml``).

lm-eval resolves neither (it reads data paths relative to the working directory and needs an
absolute or YAML-relative include), so :func:`render_task_dir` copies the folder's YAML and Python
files into a temp folder, rewriting both to absolute paths. Other keys, relative includes of sibling
YAMLs and ``!function`` tags are kept as they are.
"""

from __future__ import annotations

import atexit
import difflib
import shutil
import tempfile
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from gradprune.errors import EvalError

LM_EVAL_SCHEME = "lm_eval_tasks://"


class _FunctionTag(str):
    """A ``!function module.attr`` scalar, kept verbatim through load and dump."""


class _Loader(yaml.SafeLoader):
    """SafeLoader that keeps lm-eval's ``!function`` tags instead of failing on them."""


class _Dumper(yaml.SafeDumper):
    """SafeDumper that writes ``!function`` tags back."""


_Loader.add_constructor("!function", lambda loader, node: _FunctionTag(loader.construct_scalar(node)))
_Dumper.add_representer(_FunctionTag, lambda dumper, data: dumper.represent_scalar("!function", str(data)))


def lm_eval_tasks_root() -> Path:
    """The folder of the task YAMLs packaged with lm-eval."""
    import lm_eval.tasks

    return Path(lm_eval.tasks.__file__).parent


def resolve_task_dir(task_dir: str | None) -> Path | None:
    """``eval.task_dir`` → a folder (``embedded`` = the shipped tiny tasks); EvalError if missing."""
    if task_dir is None:
        return None
    if task_dir == "embedded":
        try:
            from gradprune.assets import TASKS_DIR
        except ImportError as exc:
            raise EvalError(f"eval.task_dir: 'embedded' needs gradprune.assets.TASKS_DIR ({exc})") from None
        path = Path(TASKS_DIR)
    else:
        path = Path(task_dir).expanduser()
    if not path.is_dir():
        from gradprune.data.sources import relative_note

        raise EvalError(f"eval.task_dir: {str(path)!r} is not a folder of lm-eval task YAMLs{relative_note(task_dir)}")
    return path.resolve()


def _abs_include(inc: str, src_dir: Path, root: Path) -> str:
    if inc.startswith(LM_EVAL_SCHEME):
        target = lm_eval_tasks_root() / inc[len(LM_EVAL_SCHEME):]
        if not target.is_file():
            raise EvalError(f"include {inc!r} (in {src_dir}): lm-eval has no packaged task YAML {str(target)!r}")
        return str(target)
    path = Path(inc)
    if path.is_absolute() or (src_dir / path).resolve().is_relative_to(root):
        return inc  # a sibling YAML: its rendered copy sits at the same relative place
    return str((src_dir / path).resolve())


def _abs_data_files(files: Any, src_dir: Path) -> Any:
    """data_files as a path, a list of paths or {split: path | [paths]} → absolute paths."""
    if isinstance(files, str):
        if "://" in files or Path(files).is_absolute():
            return files
        return str((src_dir / files).resolve())
    if isinstance(files, list):
        return [_abs_data_files(f, src_dir) for f in files]
    if isinstance(files, dict):
        return {k: _abs_data_files(v, src_dir) for k, v in files.items()}
    return files


def render_yaml(cfg: dict[str, Any], src_dir: Path, root: Path) -> dict[str, Any]:
    """One task YAML mapping with its includes and data files made absolute (a new dict)."""
    out = dict(cfg)
    if "include" in out:
        inc = out["include"]
        out["include"] = [_abs_include(i, src_dir, root) for i in inc] if isinstance(inc, list) \
            else _abs_include(inc, src_dir, root)
    kwargs = out.get("dataset_kwargs")
    if isinstance(kwargs, dict) and "data_files" in kwargs:
        out["dataset_kwargs"] = {**kwargs, "data_files": _abs_data_files(kwargs["data_files"], src_dir)}
    return out


def _render_file(src: Path, dst: Path, root: Path) -> None:
    try:
        cfg = yaml.load(src.read_text(encoding="utf-8"), Loader=_Loader)  # noqa: S506 (SafeLoader subclass)
    except (OSError, yaml.YAMLError) as exc:
        raise EvalError(f"task YAML {str(src)!r} cannot be read: {exc}") from None
    if isinstance(cfg, dict):
        cfg = render_yaml(cfg, src.parent, root)
    dst.write_text(yaml.dump(cfg, Dumper=_Dumper, sort_keys=False, allow_unicode=True), encoding="utf-8")


@cache
def render_task_dir(task_dir: Path) -> Path:
    """Copy ``task_dir``'s YAML and Python files into a temp folder (kept for the process), rendered."""
    tmp = Path(tempfile.mkdtemp(prefix="gradprune_tasks_"))
    atexit.register(shutil.rmtree, tmp, ignore_errors=True)
    for src in sorted(task_dir.rglob("*")):
        if not src.is_file() or "__pycache__" in src.parts:
            continue
        dst = tmp / src.relative_to(task_dir)
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.suffix in (".yaml", ".yml"):
            _render_file(src, dst, task_dir)
        elif src.suffix == ".py":
            shutil.copy2(src, dst)
    return tmp


@cache
def _task_manager(include_path: Path | None, include_defaults: bool) -> Any:
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=str(include_path) if include_path else None,
                       include_defaults=include_defaults)


def resolve_tasks(tasks: list[str], task_dir: str | None) -> tuple[Any, list[str]]:
    """A TaskManager for ``tasks`` and one message (with close matches) per name it does not know.

    lm-eval's own tasks are indexed (6-8 s) only when ``task_dir`` is unset or lacks a task.
    """
    folder = resolve_task_dir(task_dir)
    rendered = render_task_dir(folder) if folder is not None else None
    if rendered is not None:
        tm = _task_manager(rendered, False)
        if all(t in tm.all_tasks for t in tasks):
            return tm, []
    tm = _task_manager(rendered, True)
    return tm, [_unknown_task_message(t, tm.all_tasks, task_dir) for t in tasks if t not in tm.all_tasks]


def task_manager_for(tasks: list[str], task_dir: str | None) -> Any:
    """A TaskManager that knows every name in ``tasks``; one EvalError naming every unknown one otherwise."""
    tm, unknown = resolve_tasks(tasks, task_dir)
    if unknown:
        raise EvalError("; ".join(unknown))
    return tm


def _unknown_task_message(name: str, known: list[str], task_dir: str | None) -> str:
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.6)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    where = f"lm-eval's tasks or eval.task_dir {task_dir!r}" if task_dir else "lm-eval's tasks"
    return f"eval.tasks: unknown task {name!r} (not in {where}).{hint}"


def dataset_label(tm: Any, task: str) -> str:
    """``dataset_path`` (and ``dataset_name``) of a task, for error messages."""
    entry = tm.task_index.get(task)
    cfg = (entry.cfg if entry is not None else None) or {}
    path, name = cfg.get("dataset_path", "?"), cfg.get("dataset_name")
    return f"{path}/{name}" if name else str(path)
