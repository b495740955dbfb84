"""Per-task progress and model time for one lm-eval run, which batches all tasks' requests together.

lm-eval has no per-request callback, but HFLM reports every finished request to ``lm.cache_hook``
(a no-op without a request cache). The tracker takes that place on our own HFLM instance, maps each
request back to its task, advances that task's progress row, and splits the time of each model
batch evenly over the requests it answered (``model_seconds`` per task). It also records which task
was being worked on, so that a failure can name it.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict, deque
from typing import Any

REQUEST_TYPES = ("loglikelihood", "loglikelihood_rolling", "generate_until")


def _key(attr: str, args: Any) -> tuple:
    parts = args if isinstance(args, tuple) else (args,)
    return (attr, *(p if isinstance(p, str) else repr(p) for p in parts))


class RequestTracker:
    """Installed on one HFLM instance (never on the class) for the duration of a ``with`` block."""

    def __init__(self, lm: Any, progress: Any = None) -> None:
        self.lm = lm
        self.progress = progress
        self.requests: Counter[str] = Counter()
        self.done: Counter[str] = Counter()
        self.model_seconds: dict[str, float] = defaultdict(float)
        self.current: tuple[str, str] | None = None  # (task, what it was doing)
        self._pending: dict[tuple, deque[str]] = defaultdict(deque)
        self._batch_start: float | None = None
        self._batch_tasks: list[str] = []
        self._watched: list[tuple[Any, str]] = []  # (task, method name) wrapped by watch_task

    # -- the CacheHook interface HFLM calls once per finished request ------------------------------
    def add_partial(self, attr: str, req: Any, res: Any) -> None:
        """One request finished: advance its task's row."""
        queue = self._pending.get(_key(attr, req))
        task = queue.popleft() if queue else self._most_pending()
        if task is None:
            return
        self.done[task] += 1
        self._batch_tasks.append(task)
        if self.progress is not None:
            self.progress.advance(f"task:{task}")

    def _most_pending(self) -> str | None:
        left = self.requests - self.done
        return left.most_common(1)[0][0] if left else None

    # -- wrappers around our HFLM instance's methods ----------------------------------------------
    def _wrap_requests(self, attr: str, method: Any) -> Any:
        def wrapped(requests: list, disable_tqdm: bool = False) -> Any:
            for req in requests:
                task = req.task_name or "?"
                self.requests[task] += 1
                self._pending[_key(attr, req.args)].append(task)
            if self.progress is not None:
                for task, n in self.requests.items():
                    self.progress.set_total(f"task:{task}", n)
            tasks = ", ".join(sorted({r.task_name or "?" for r in requests}))
            self.current = (tasks, f"running the model on {len(requests)} {attr} requests")
            try:
                return method(requests, disable_tqdm=True)
            finally:
                self._flush_batch()

        return wrapped

    def _wrap_model_call(self, method: Any) -> Any:
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            self._flush_batch()
            self._batch_start = time.perf_counter()
            return method(*args, **kwargs)

        return wrapped

    def _flush_batch(self) -> None:
        if self._batch_start is not None and self._batch_tasks:
            share = (time.perf_counter() - self._batch_start) / len(self._batch_tasks)
            for task in self._batch_tasks:
                self.model_seconds[task] += share
        self._batch_start, self._batch_tasks = None, []

    def watch_task(self, task: Any) -> None:
        """Record which task builds its requests / scores its results, so errors can name it."""
        for name, what in (("build_all_requests", "building its requests"),
                           ("process_results", "scoring its results")):
            method = getattr(task, name, None)
            if method is None:
                continue

            def wrapped(*args: Any, _m: Any = method, _what: str = what, **kwargs: Any) -> Any:
                self.current = (task.config.task, _what)
                return _m(*args, **kwargs)

            setattr(task, name, wrapped)
            self._watched.append((task, name))

    def __enter__(self) -> RequestTracker:
        self._saved = {"cache_hook": self.lm.cache_hook}
        self.lm.cache_hook = self
        for attr in REQUEST_TYPES:
            if hasattr(self.lm, attr):
                self._saved[attr] = getattr(self.lm, attr)
                setattr(self.lm, attr, self._wrap_requests(attr, self._saved[attr]))
        if hasattr(self.lm, "_model_call"):
            self._saved["_model_call"] = self.lm._model_call
            self.lm._model_call = self._wrap_model_call(self.lm._model_call)
        return self

    def __exit__(self, *exc: object) -> None:
        self._flush_batch()
        for attr, value in self._saved.items():
            if attr == "cache_hook":
                self.lm.cache_hook = value
            else:
                # the originals were bound methods looked up on the class: drop the instance attribute
                self.lm.__dict__.pop(attr, None)
        # a wrapper left on a task would keep this tracker, and through it the model, alive in a reference
        # cycle (task -> wrapper -> task) after the evaluation
        for task, name in self._watched:
            vars(task).pop(name, None)
        self._watched.clear()
