"""Early checks of the eval section against the model, so bad input fails before any pruning work."""

from __future__ import annotations

from typing import Any

from gradprune.errors import EvalError

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


def _check_ppl(cfg: Any, model_config: Any) -> None:
    from gradprune.eval.ppl_data import check_ppl_name, ppl_key

    if cfg.run == "ppl" and not cfg.ppl_datasets:
        raise EvalError("eval.run is 'ppl' but eval.ppl_datasets is empty")
    keys: dict[str, str] = {}
    for name in cfg.ppl_datasets:
        check_ppl_name(name)
        key = ppl_key(name)
        if key in keys:
            raise EvalError(f"eval.ppl_datasets: {keys[key]!r} and {name!r} would both be reported as ppl_{key}")
        keys[key] = name
    limit = max_positions(model_config)
    for n in seq_lens(cfg):
        if n < 2:
            raise EvalError(f"eval.ppl_seq_len: {n} is too short; a window needs at least 2 tokens")
        if limit is not None and n > limit:
            raise EvalError(
                f"eval.ppl_seq_len: {n} is longer than the model's max_position_embeddings ({limit}); "
                f"use a value <= {limit} (128 as LLM-Pruner/FLAP report, 2048 as Wanda)"
            )


def _check_zeroshot(cfg: Any) -> None:
    from gradprune.eval.tasks import task_manager_for

    if cfg.run == "zeroshot" and not cfg.tasks:
        raise EvalError("eval.run is 'zeroshot' but eval.tasks is empty")
    dupes = sorted({t for t in cfg.tasks if cfg.tasks.count(t) > 1})
    if dupes:
        raise EvalError(f"eval.tasks: {', '.join(dupes)} listed more than once")
    if cfg.limit is not None and cfg.limit <= 0:
        raise EvalError("eval.limit must be > 0 (a count of examples, or a fraction in (0, 1])")
    if cfg.tasks:
        task_manager_for(list(cfg.tasks), cfg.task_dir)


def check_eval_config(cfg: Any, model_config: Any = None, *, load_data: bool = False) -> None:
    """Raise EvalError for an eval section that cannot work with this model; cheap unless ``load_data``.

    Checks data set names, task names (close matches), the task folder, and seq_len against the
    model's max positions. With ``load_data`` it also loads every text and task data set, so a data
    set that is not available offline fails here rather than after pruning.
    """
    if cfg.run == "none":
        return
    if cfg.run in ("all", "ppl"):
        _check_ppl(cfg, model_config)
    if cfg.run in ("all", "zeroshot"):
        _check_zeroshot(cfg)
    if load_data:
        _load_all(cfg)


def _load_all(cfg: Any) -> None:
    from gradprune.eval.ppl_data import load_ppl_text
    from gradprune.eval.quiet import quiet_libraries
    from gradprune.eval.tasks import task_manager_for
    from gradprune.eval.zeroshot import load_tasks

    with quiet_libraries():
        if cfg.run in ("all", "ppl"):
            for name in cfg.ppl_datasets:
                load_ppl_text(name)
        if cfg.run in ("all", "zeroshot") and cfg.tasks:
            load_tasks(task_manager_for(list(cfg.tasks), cfg.task_dir), list(cfg.tasks))
