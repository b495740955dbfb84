"""Zero-shot accuracy with lm-eval on the in-memory (pruned) model.

All tasks run in one ``simple_evaluate`` call, exactly as lm-eval's CLI runs them (same request
batching and order), so the numbers are the ones ``python -m lm_eval --model hf ...`` prints for the
same saved model, tasks and settings. Tasks are loaded one by one first so that a data set that
cannot be loaded is reported with its task's name.
"""

from __future__ import annotations

import contextlib
import copy
import math
import os
import re
import time
from collections.abc import Iterator
from importlib import metadata
from typing import Any

from gradprune.data.sources import offline_hint
from gradprune.errors import EvalError
from gradprune.eval.request_tracker import RequestTracker
from gradprune.eval.tasks import dataset_label, task_manager_for

PROTOCOL = "lm-eval simple_evaluate on the in-memory model (HFLM), all tasks in one run"


def lm_eval_version() -> str:
    """The installed lm-eval version."""
    return metadata.version("lm_eval")


def load_tasks(tm: Any, names: list[str], progress: Any = None) -> tuple[dict[str, Any], dict[str, float]]:
    """Task objects by name (a group or tag expands to its tasks) and the seconds each took to load."""
    tasks: dict[str, Any] = {}
    seconds: dict[str, float] = {}
    for name in names:
        start = time.perf_counter()
        try:
            loaded = tm.load([name])["tasks"]
        except Exception as exc:  # datasets / lm-eval raise many types
            raise _load_error(tm, name, exc) from None
        for task_name, task in loaded.items():
            tasks[task_name] = task
            seconds[task_name] = (time.perf_counter() - start) / len(loaded)
            if progress is not None:
                progress.add_row(f"task:{task_name}", f"task {task_name}")
    return tasks, seconds


_UNAVAILABLE = ("DatasetNotFoundError", "DataFilesNotFoundError", "EmptyDatasetError", "OfflineModeIsEnabled",
                "LocalEntryNotFoundError", "HfHubHTTPError", "RepositoryNotFoundError")


_MISSING_FILE = re.compile(r"Unable to find '([^']+)'|No such file or directory: '([^']+)'")


def _missing_local_file(exc: BaseException) -> str | None:
    """The local data file a task's YAML names that does not exist (datasets: "Unable to find '/x.jsonl'")."""
    m = _MISSING_FILE.search(str(exc))
    path = next((g for g in m.groups() if g), None) if m else None
    return path if path and os.path.isabs(path) and not os.path.exists(path) else None


def _load_error(tm: Any, name: str, exc: Exception) -> EvalError:
    """A data set that is not available offline gets the offline hint; a missing local data file, a cache
    that cannot be written and other errors say what they are (the hint would not fix them)."""
    from gradprune.files import write_failure

    what = f"{type(exc).__name__}: {exc}"
    missing = _missing_local_file(exc)
    if missing is not None:
        return EvalError(f"eval.tasks: task {name!r} cannot be loaded: its data file {missing!r} does not exist "
                         "(the task's YAML names it under dataset_kwargs.data_files); restore the file or fix "
                         "the task's YAML")
    kind = write_failure(exc)
    if kind is not None:
        return EvalError(f"eval.tasks: task {name!r} cannot be loaded: the datasets cache cannot be written "
                         f"({kind}: {exc}); set HF_DATASETS_CACHE (or HF_HOME) to a writable folder")
    unavailable = isinstance(exc, ConnectionError | OSError) or type(exc).__name__ in _UNAVAILABLE \
        or "offline" in str(exc).lower()
    if unavailable:
        return EvalError(
            f"eval.tasks: task {name!r} cannot be loaded: its data set {dataset_label(tm, name)!r} is not "
            f"available ({what}). " + offline_hint("point eval.task_dir at local task files")
        )
    return EvalError(f"eval.tasks: task {name!r} failed while being set up (loading its documents): {what}")


def make_lm(model: Any, tokenizer: Any, batch_size: int | str, max_batch_size: int | str = "auto") -> Any:
    """HFLM around the in-memory model; the tokenizer is copied (HFLM may set its pad token).

    ``batch_size: auto`` with ``max_batch_size: auto`` on a GPU: each batch size lm-eval asks for (at its
    longest request) comes from a byte budget, half the GPU memory free then
    (:func:`gradprune.eval.batching.lm_eval_rows`), without lm-eval's trial forward passes; a number caps
    lm-eval's own search (which starts there); on the CPU lm-eval searches from its default 64.
    """
    from gradprune.eval.batching import MAX_SEQUENCES, device_budget

    budgeted = max_batch_size == "auto" and device_budget(next(model.parameters()).device) is not None
    cls = _budgeted_hflm() if budgeted else _hflm()
    cap = max_batch_size if isinstance(max_batch_size, int) else (MAX_SEQUENCES if budgeted else 64)
    return cls(pretrained=model, tokenizer=copy.deepcopy(tokenizer), batch_size=batch_size, max_batch_size=cap,
               device=str(getattr(model, "device", "cpu")))


def _hflm() -> type:
    from lm_eval.models.huggingface import HFLM

    return HFLM


def _budgeted_hflm() -> type:
    """HFLM whose automatic batch size follows the byte budget at the longest request's length."""
    from gradprune.eval.batching import lm_eval_rows

    class BudgetedHFLM(_hflm()):
        """HFLM: ``batch_size: auto`` sized from a byte budget (no trial forward passes)."""

        def _detect_batch_size(self, requests=None, pos: int = 0) -> int:
            if requests:  # the request lm-eval would try, cut to the context window as it would
                _, context, continuation = requests[pos]
                length = len((context + continuation)[-(self.max_length + 1):][:-1])
            else:
                length = self.max_length
            return lm_eval_rows(self._model, max(length, 1), cap=self.max_batch_size) or 1

    return BudgetedHFLM


def _metric_name(key: str, task: str) -> str | None:
    """lm-eval's ``acc,none`` → ``acc_<task>``; ``acc_stderr,none`` → ``acc_<task>_stderr``."""
    metric, _, filt = key.partition(",")
    if not filt or metric in ("alias", "name", "sample_len"):
        return None
    suffix = "" if filt == "none" else "_" + re.sub(r"[^0-9A-Za-z]+", "_", filt)
    if metric.endswith("_stderr"):
        return f"{metric[: -len('_stderr')]}{suffix}_{task}_stderr"
    return f"{metric}{suffix}_{task}"


def flatten_results(results: dict[str, Any], task_names: list[str]) -> dict[str, float]:
    """Flat metrics: per task ``acc_<task>``, ``acc_norm_<task>`` (+ ``_stderr``), then the means."""
    flat: dict[str, float] = {}
    for task in task_names:
        for key, value in results.get(task, {}).items():
            name = _metric_name(key, task)
            if name is not None and isinstance(value, int | float) and not isinstance(value, bool):
                flat[name] = float(value)
    for metric in ("acc", "acc_norm"):
        vals = [flat[f"{metric}_{t}"] for t in task_names if f"{metric}_{t}" in flat]
        if vals:
            flat[f"{metric}_mean"] = math.fsum(vals) / len(vals)
    return flat


def _run(lm: Any, tasks: dict[str, Any], tm: Any, cfg: Any, tracker: RequestTracker) -> dict[str, Any]:
    import lm_eval

    try:
        res = lm_eval.simple_evaluate(
            model=lm, tasks=list(tasks.values()), task_manager=tm, num_fewshot=cfg.num_fewshot,
            limit=cfg.limit, batch_size=cfg.batch_size, log_samples=False,
        )
    except EvalError:
        raise
    except Exception as exc:
        task, what = tracker.current or (", ".join(tasks), "evaluating")
        raise EvalError(f"zero-shot task {task!r} failed while {what}: {type(exc).__name__}: {exc}") from exc
    if res is None:
        raise EvalError("zero-shot evaluation returned no results (not rank 0 of a distributed run?)")
    return res


def evaluate_zeroshot(model: Any, tokenizer: Any, cfg: Any, progress: Any = None) -> tuple[dict[str, float], dict]:
    """lm-eval accuracy on eval.tasks → (flat metrics, info with versions, n and timings)."""
    start = time.perf_counter()
    tm = task_manager_for(cfg.tasks, cfg.task_dir)
    tasks, load_s = load_tasks(tm, cfg.tasks, progress)
    lm = make_lm(model, tokenizer, cfg.batch_size, cfg.max_batch_size)
    with RequestTracker(lm, progress) as tracker:
        for task in tasks.values():
            tracker.watch_task(task)
        res = _run(lm, tasks, tm, cfg, tracker)
    names = list(tasks)
    metrics = flatten_results(res["results"], names)
    if progress is not None:
        for t in names:
            acc = metrics.get(f"acc_{t}")
            note = f"acc {acc:.4f}" if acc is not None else "done"
            progress.finish(f"task:{t}", f"{note}, {tracker.requests.get(t, 0)} requests",
                            seconds=load_s[t] + tracker.model_seconds.get(t, 0.0))
    info = {
        "protocol": PROTOCOL,
        "lm_eval_version": res.get("lm_eval_version") or lm_eval_version(),
        "task_versions": {t: res["versions"].get(t) for t in names},
        "n_shot": {t: res["n-shot"].get(t) for t in names},
        "n": {t: res["n-samples"][t]["effective"] for t in names if t in res.get("n-samples", {})},
        "n_original": {t: res["n-samples"][t]["original"] for t in names if t in res.get("n-samples", {})},
        "requests": dict(tracker.requests),
        "num_fewshot": cfg.num_fewshot, "limit": cfg.limit, "batch_size": cfg.batch_size,
        "max_batch_size": lm.max_batch_size,
        "batch_sizes": res.get("config", {}).get("batch_sizes", []),
        "task_dir": cfg.task_dir,
        "seconds": {"load": load_s, "model": {t: tracker.model_seconds.get(t, 0.0) for t in names},
                    "total": time.perf_counter() - start},
    }
    return metrics, info


# --- per-example evaluation of chosen example indices (successive halving re-uses scored examples) ---


def task_sizes(cfg: Any) -> dict[str, int]:
    """How many examples each task of ``cfg.tasks`` evaluates (its eval docs, after ``cfg.limit``)."""
    from lm_eval.evaluator_utils import get_sample_size

    tasks, _ = load_tasks(task_manager_for(cfg.tasks, cfg.task_dir), cfg.tasks)
    sizes = {}
    for name, task in tasks.items():
        n = len(task.eval_docs)
        limit = get_sample_size(task, cfg.limit)
        sizes[name] = n if limit is None else min(n, limit)
    return sizes


def _mean_metrics(task: Any) -> set[str]:
    """Metrics of ``task`` that lm-eval aggregates by the plain mean (acc, acc_norm of multiple choice)."""
    from lm_eval.api.metrics import mean

    return {m for m, fn in task.aggregation().items() if fn is mean}


@contextlib.contextmanager
def _without_env_info() -> Iterator[None]:
    """``simple_evaluate`` records pip/GPU details by running subprocesses (≈0.6 s a call, every call):
    metadata the per-example results below never use, and paid once per rung otherwise."""
    import lm_eval.evaluator as evaluator

    saved = evaluator.add_env_info
    evaluator.add_env_info = lambda results: None
    try:
        yield
    finally:
        evaluator.add_env_info = saved


def evaluate_zeroshot_examples(model: Any, tokenizer: Any, cfg: Any,
                               indices: dict[str, list[int]]) -> dict[str, dict[int, dict[str, float]]]:
    """Per-example results of exactly the given example indices of each task:
    ``{task: {doc index: {"acc": 1.0, "acc_norm": 0.0, ...}}}`` (filter ``none`` metrics by name,
    others as ``metric,filter``). Only metrics that lm-eval averages over examples are returned, so
    merging results of several calls and averaging gives the numbers of one call over the union.

    Indices are passed sorted: lm-eval maps the k-th document it yields (in data set order) back to
    ``samples[k]``, which is right only for a sorted list. A task with no index is not run at all
    (an empty list would make lm-eval evaluate the whole task).
    """
    import lm_eval

    wanted = {t: sorted(set(ix)) for t, ix in indices.items() if ix}
    if not wanted:
        return {}
    tm = task_manager_for(cfg.tasks, cfg.task_dir)
    tasks, _ = load_tasks(tm, cfg.tasks)
    unknown = sorted(set(wanted) - set(tasks))
    if unknown:
        raise EvalError(f"eval.tasks: no task {unknown[0]!r} among {sorted(tasks)}")
    run = {t: tasks[t] for t in wanted}
    lm = make_lm(model, tokenizer, cfg.batch_size, cfg.max_batch_size)
    with RequestTracker(lm, None) as tracker:
        for task in run.values():
            tracker.watch_task(task)
        try:
            with _without_env_info():
                res = lm_eval.simple_evaluate(model=lm, tasks=list(run.values()), task_manager=tm,
                                              num_fewshot=cfg.num_fewshot, samples=wanted,
                                              batch_size=cfg.batch_size, log_samples=True, bootstrap_iters=0)
        except Exception as exc:
            task, what = tracker.current or (", ".join(run), "evaluating")
            raise EvalError(f"zero-shot task {task!r} failed while {what}: {type(exc).__name__}: {exc}") from exc
    if res is None:
        raise EvalError("zero-shot evaluation returned no results (not rank 0 of a distributed run?)")
    out: dict[str, dict[int, dict[str, float]]] = {}
    for name, task in run.items():
        keep = _mean_metrics(task)
        per_doc = out.setdefault(name, {})
        for ex in res["samples"].get(name, []):
            suffix = "" if ex["filter"] == "none" else f",{ex['filter']}"
            row = per_doc.setdefault(int(ex["doc_id"]), {})
            row.update({f"{m}{suffix}": float(ex[m]) for m in ex["metrics"] if m in keep})
    return out


def aggregate_examples(per_example: dict[str, dict[int, dict[str, float]]], task_names: list[str]) -> dict[str, float]:
    """Flat metrics (``acc_<task>``, ``acc_<task>_stderr``, ``acc_mean`` …) from per-example results, with
    lm-eval's own aggregation of these metrics: the mean, and the sample stderr sd/√n."""
    from lm_eval.api.metrics import mean, mean_stderr

    results: dict[str, dict[str, float]] = {}
    for task in task_names:
        values: dict[str, list[float]] = {}
        for doc in sorted(per_example.get(task, {})):
            for key, v in per_example[task][doc].items():
                values.setdefault(key, []).append(v)
        entry = results.setdefault(task, {})
        for key, vals in values.items():
            metric, _, filt = key.partition(",")
            filt = filt or "none"
            entry[f"{metric},{filt}"] = mean(vals)
            if len(vals) > 1:  # lm-eval reports no stderr for one example either
                entry[f"{metric}_stderr,{filt}"] = mean_stderr(vals)
    return flatten_results(results, task_names)
