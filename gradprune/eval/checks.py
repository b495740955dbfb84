"""Early checks of the eval section against the model, so bad input fails before any pruning work.

Every check collects problems instead of stopping at the first one: a user who lists seven tasks and
two perplexity texts learns about every one that cannot work from one error, not from seven runs.
"""

from __future__ import annotations

from typing import Any

from gradprune.errors import EvalError, GradpruneError

POSITION_ATTRS = ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length")


def seq_lens(cfg: Any) -> list[int]:
    """eval.ppl_seq_len as a list."""
    return list(cfg.ppl_seq_len) if isinstance(cfg.ppl_seq_len, list) else [cfg.ppl_seq_len]


def max_positions(model_config: Any) -> int | None:
    """The longest input the model accepts, from its config (None when the config does not say)."""
    for attr in POSITION_ATTRS:
        value = getattr(model_config, attr, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def _ppl_problems(cfg: Any, model_config: Any) -> tuple[list[str], list[str]]:
    """Problems of eval.ppl_datasets / ppl_seq_len, and the data set names that passed the name check."""
    from gradprune.eval.ppl_data import check_ppl_name, ppl_key

    problems: list[str] = []
    if cfg.run == "ppl" and not cfg.ppl_datasets:
        problems.append("eval.run is 'ppl' but eval.ppl_datasets is empty")
    keys: dict[str, str] = {}
    named: list[str] = []
    for name in cfg.ppl_datasets:
        try:
            check_ppl_name(name)
        except GradpruneError as exc:
            problems.append(str(exc))
            continue
        named.append(name)
        key = ppl_key(name)
        if key in keys:
            problems.append(f"eval.ppl_datasets: {keys[key]!r} and {name!r} would both be reported as ppl_{key}")
        keys[key] = name
    limit = max_positions(model_config)
    for n in seq_lens(cfg):
        if n < 2:
            problems.append(f"eval.ppl_seq_len: {n} is too short; a window needs at least 2 tokens")
        elif limit is not None and n > limit:
            problems.append(
                f"eval.ppl_seq_len: {n} is longer than the model's max_position_embeddings ({limit}); "
                f"use a value <= {limit} (128 as LLM-Pruner/FLAP report, 2048 as Wanda)")
    return problems, named


def _zeroshot_problems(cfg: Any, resolve: bool) -> tuple[list[str], Any, list[str]]:
    """Problems of eval.tasks, the TaskManager (None unless ``resolve``) and the task names it knows."""
    from gradprune.eval.tasks import resolve_tasks

    problems: list[str] = []
    if cfg.run == "zeroshot" and not cfg.tasks:
        problems.append("eval.run is 'zeroshot' but eval.tasks is empty")
    dupes = sorted({t for t in cfg.tasks if cfg.tasks.count(t) > 1})
    if dupes:
        problems.append(f"eval.tasks: {', '.join(dupes)} listed more than once")
    if cfg.limit is not None and cfg.limit <= 0:
        problems.append("eval.limit must be > 0 (a count of examples, or a fraction in (0, 1])")
    if not (resolve and cfg.tasks):
        return problems, None, []
    try:
        tm, unknown = resolve_tasks(list(dict.fromkeys(cfg.tasks)), cfg.task_dir)
    except GradpruneError as exc:  # eval.task_dir is missing or holds an unreadable YAML
        return [*problems, str(exc)], None, []
    problems += unknown
    return problems, tm, [t for t in dict.fromkeys(cfg.tasks) if t in tm.all_tasks]


def eval_problems(cfg: Any, model_config: Any = None, *, task_names: bool = True, load_data: bool = False,
                  memo: dict | None = None) -> list[str]:
    """Every reason the eval section cannot work with this model, as messages (empty: none found).

    Checks data set names, ``ppl_seq_len`` against the model's max positions and (``task_names``) task
    names with close matches, which imports lm-eval and may index its tasks (seconds). ``load_data``
    also loads every text and task data set, so one that is not available offline is named here rather
    than after pruning. ``memo`` (a dict kept by the caller) remembers data sets already loaded, so a
    search checks each one once for all its grid points.
    """
    memo = {} if memo is None else memo
    problems: list[str] = []
    ppl_named: list[str] = []
    tm, tasks = None, []
    proxy = getattr(cfg, "proxy_text", None)  # proxies run even with eval.run none when a text is named
    if proxy and getattr(cfg, "proxy_windows", 0):
        try:
            from gradprune.eval.ppl_data import check_ppl_name

            check_ppl_name(proxy)
            if load_data:
                problems += _remember(memo, ("ppl", proxy), lambda: _ppl_data_problem(proxy))
        except EvalError as exc:
            problems.append(str(exc).replace("eval.ppl_datasets", "eval.proxy_text"))
    if cfg.run == "none":
        return problems
    if cfg.run in ("all", "ppl"):
        found, ppl_named = _ppl_problems(cfg, model_config)
        problems += found
    if cfg.run in ("all", "zeroshot"):
        found, tm, tasks = _zeroshot_problems(cfg, resolve=task_names or load_data)
        problems += found
    if load_data:
        from gradprune.eval.quiet import quiet_libraries

        with quiet_libraries():
            for name in ppl_named:
                problems += _remember(memo, ("ppl", name), lambda n=name: _ppl_data_problem(n))
            for task in tasks:
                problems += _remember(memo, ("task", cfg.task_dir, task), lambda t=task: _task_data_problem(tm, t))
    return problems


def _remember(memo: dict, key: tuple, check) -> list[str]:
    if key not in memo:
        memo[key] = check()
    return memo[key]


def _ppl_data_problem(name: str) -> list[str]:
    from gradprune.eval.ppl_data import check_ppl_data

    try:
        check_ppl_data(name)  # fetches (or finds) the files and checks them; builds no text
    except GradpruneError as exc:
        return [str(exc)]
    return []


def _task_data_problem(tm: Any, task: str) -> list[str]:
    from gradprune.eval.zeroshot import load_tasks

    try:
        load_tasks(tm, [task])
    except GradpruneError as exc:
        return [str(exc)]
    return []


def check_eval_config(cfg: Any, model_config: Any = None, *, load_data: bool = False) -> None:
    """Raise one EvalError naming every problem :func:`eval_problems` finds (cheap unless ``load_data``)."""
    from gradprune.data.sources import dedupe_hints

    problems = eval_problems(cfg, model_config, load_data=load_data)
    if problems:
        raise EvalError("; ".join(dedupe_hints(problems)))
