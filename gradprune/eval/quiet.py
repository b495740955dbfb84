"""Keeps lm-eval and datasets quiet while evaluating: warnings and errors only, no tqdm bars, and no
``fatal: not a git repository`` from lm-eval's commit-hash lookup outside a git checkout.

Our own progress rows replace their bars. Everything is restored on exit.
"""

from __future__ import annotations

import functools
import logging
import os
import subprocess
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

# Warnings lm-eval always gives for what we do on purpose (an in-memory model, tasks that rely on
# the default aggregation, few-shot set when the task has no default): they say nothing about the run.
# Each entry: substrings that must all occur in the message.
EXPECTED_WARNINGS = (
    ("`pretrained` model kwarg is not of type `str`",),
    ("Passed an already-initialized model through `pretrained`",),
    ("is defined, but aggregation is not",),
    ("is defined, but higher_is_better is not",),
    ("Overwriting default num_fewshot of", "from None to"),
)


class _DropExpected(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        return not any(all(s in msg for s in parts) for parts in EXPECTED_WARNINGS)


@contextmanager
def _logger_level(name: str, level: int) -> Iterator[logging.Logger]:
    logger = logging.getLogger(name)
    old = logger.level
    logger.setLevel(max(level, old) if old != logging.NOTSET else level)
    try:
        yield logger
    finally:
        logger.setLevel(old)


@contextmanager
def _filtered(logger_names: tuple[str, ...]) -> Iterator[None]:
    flt = _DropExpected()
    loggers = [logging.getLogger(n) for n in logger_names]
    for lg in loggers:
        lg.addFilter(flt)
    try:
        yield
    finally:
        for lg in loggers:
            lg.removeFilter(flt)


@contextmanager
def _no_task_tqdm() -> Iterator[None]:
    """lm-eval's request building shows a tqdm bar per task and has no switch for it."""
    from lm_eval.api import task as task_module

    original = task_module.tqdm
    task_module.tqdm = functools.partial(original, disable=True)
    try:
        yield
    finally:
        task_module.tqdm = original


def _git_hash_quietly() -> str | None:
    """lm-eval's ``get_git_commit_hash`` with git's stderr discarded (it runs ``git describe`` with stderr
    on the terminal, so every evaluation outside a checkout printed ``fatal: not a git repository``)."""
    from lm_eval.loggers.utils import get_commit_from_path

    try:
        out = subprocess.run(["git", "describe", "--always"], capture_output=True, check=True)  # noqa: S607
        return out.stdout.decode().strip()
    except (subprocess.CalledProcessError, FileNotFoundError, OSError):
        return get_commit_from_path(os.getcwd())


@contextmanager
def _no_git_noise() -> Iterator[None]:
    import lm_eval.evaluator as evaluator

    original = evaluator.get_git_commit_hash
    evaluator.get_git_commit_hash = _git_hash_quietly
    try:
        yield
    finally:
        evaluator.get_git_commit_hash = original


@contextmanager
def _no_datasets_bars() -> Iterator[None]:
    import datasets

    was_enabled = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        if was_enabled:
            datasets.enable_progress_bars()


def _lm_eval_logger_names() -> tuple[str, ...]:
    # Filters do not propagate to child loggers: attach to each logger that emits the warnings.
    return ("lm_eval", "lm_eval.models.huggingface", "lm_eval.api.task", "lm_eval.evaluator")


@contextmanager
def quiet_libraries(lm_eval: bool = True, datasets: bool = True) -> Iterator[None]:
    """lm-eval at WARNING without the expected warnings, and no lm-eval/datasets progress bars.

    ``lm_eval`` / ``datasets`` false: leave that library alone (and do not import it: seconds).
    """
    with ExitStack() as stack:
        stack.enter_context(_logger_level("lm_eval", logging.WARNING))
        stack.enter_context(_filtered(_lm_eval_logger_names()))
        if lm_eval:
            stack.enter_context(_no_task_tqdm())
            stack.enter_context(_no_git_noise())
        if datasets:
            stack.enter_context(_no_datasets_bars())
        yield
