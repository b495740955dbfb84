"""The Optuna study behind a search: storage, the grid queue, claiming trials, stale-trial recovery.

Grid searches enqueue every grid point once (under a file lock for the default journal storage);
each worker claims WAITING trials atomically through the storage (``set_trial_state_values`` to
RUNNING succeeds for one process only), so several workers complete every point exactly once.
A trial whose worker died (SIGKILL, OOM killer, node loss) is found by its owner record (same host,
dead PID) or a stale heartbeat, marked failed, and re-enqueued — again exactly once, because only
one process can move a RUNNING trial to FAIL.
"""

from __future__ import annotations

import contextlib
import copy
import fcntl
import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from gradprune.errors import GradpruneError
from gradprune.files import pid_alive
from gradprune.search.optuna_store import (
    journal_lock,
    set_trial_state,
    set_trial_system_attr,
    set_trial_user_attr,
    trial_id_of,
    whole_records_backend,
)

HEARTBEAT_S = 30.0
STALE_AFTER_S = 600.0  # a heartbeat older than this from another host means the worker is gone


def encode(v: Any) -> Any:
    """Optuna stores str/int/float/bool/None; other values (lists, dicts) travel as JSON strings."""
    return v if v is None or isinstance(v, (str, int, float, bool)) else "json:" + json.dumps(v)


def decode(v: Any) -> Any:
    """Inverse of :func:`encode`."""
    return json.loads(v[5:]) if isinstance(v, str) and v.startswith("json:") else v


JOURNAL = "study.journal"
# how to get out of a damaged or lost storage, quoted by every such error
START_OVER = "pass --overwrite to delete this search's results and start it over"


def journal_path(url: str | None, out_dir: Path) -> Path | None:
    """The journal file a storage URL names (the default: ``<out_dir>/study.journal``); None for an RDB."""
    if url is None:
        return out_dir / JOURNAL
    return Path(url) if url.endswith((".journal", ".log")) else None


def repair_journal(path: Path) -> int:
    """Make a journal file whole records again after a crash; returns how many bytes were dropped.

    Optuna appends one JSON record plus ``\n`` per storage operation, under the journal's lock. A process
    killed mid-append leaves a partial last line; Optuna's reader skips it, but the next append would
    continue that line and merge two records into garbage that breaks every later read. So, under the
    same lock (no live writer is mid-append then), a partial tail is cut off atomically — the operation
    it held never happened, as for the killed process's reader. Anything else that is not a record
    (a bad line inside the file, bytes that no append writes) is a GradpruneError naming the line.
    """
    from gradprune.files import atomic_write_bytes

    if not path.exists():
        return 0
    if not path.is_file():
        raise GradpruneError(f"study storage {str(path)!r} is not a file; remove it or {START_OVER}")
    with journal_lock(path):
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise GradpruneError(f"study storage {str(path)!r} cannot be read: {exc.strerror or exc}") from None
        cut = data.rfind(b"\n") + 1
        whole, tail = data[:cut], data[cut:]
        for number, line in enumerate(whole.splitlines(), start=1):
            _check_record(path, number, line)
        if tail and not (tail.isascii() and tail.startswith(b"{")):  # an append writes ASCII JSON objects
            _damaged(path, whole.count(b"\n") + 1, "bytes that are not a journal record")
        if tail:
            atomic_write_bytes(path, whole)
        return len(tail)


def _check_record(path: Path, number: int, line: bytes) -> None:
    try:
        record = json.loads(line.decode("utf-8"))
    except UnicodeDecodeError:
        _damaged(path, number, "bytes that are not UTF-8 text")
    except json.JSONDecodeError as exc:
        _damaged(path, number, f"not a JSON record ({exc.msg} at column {exc.colno})")
    except RecursionError:
        _damaged(path, number, "not a journal record (nested far deeper than any record)")
    if not isinstance(record, dict) or "op_code" not in record:
        _damaged(path, number, "not an Optuna journal record (no op_code)")


def _damaged(path: Path, number: int, what: str):
    raise GradpruneError(f"study storage {str(path)!r} is damaged: line {number} is {what}. Restore the file "
                         f"from a backup, or {START_OVER}")


def stored_trial_numbers(storage, study_name: str) -> set[int]:
    """The numbers of the study's trials that the storage knows were claimed (running or ended; none
    if it has no such study). A trial with results on disk is one of them, unless the storage lost it."""
    from optuna.trial import TrialState

    try:
        study_id = storage.get_study_id_from_name(study_name)
    except KeyError:
        return set()
    return {t.number for t in storage.get_all_trials(study_id, deepcopy=False) if t.state != TrialState.WAITING}


def open_storage(url: str | None, out_dir: Path):
    """The storage: a journal file in the output dir by default, or any Optuna storage URL.

    A journal file is repaired first (see :func:`repair_journal`); a missing one is created."""
    import optuna
    from optuna.storages import JournalStorage

    path = journal_path(url, out_dir)
    if path is not None:
        repair_journal(path)
    try:
        if path is not None:
            storage = JournalStorage(whole_records_backend(str(path)))
            storage.get_all_studies()  # replays the records: one Optuna cannot apply is a damaged file
            return storage
        return optuna.storages.get_storage(url)
    except GradpruneError:
        raise
    except Exception as exc:  # bad URL, unreachable server, missing driver; a journal Optuna cannot replay
        if path is not None:
            raise GradpruneError(f"study storage {str(path)!r} is damaged: Optuna cannot replay it "
                                 f"({type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}). "
                                 f"Restore the file from a backup, or {START_OVER}") from None
        raise GradpruneError(f"--storage {url!r}: cannot open the Optuna storage: {type(exc).__name__}: "
                             f"{str(exc).splitlines()[0][:300]}") from None


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive lock between processes on one machine (or a shared file system with flock)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def make_sampler(kind: str, space: dict[str, list[Any]], seed: int):
    """The study's sampler. A grid search is Optuna's trial queue: every point is enqueued once and
    claimed atomically (``GridSampler`` instead draws points at random per worker, which can repeat a
    point under concurrency, and its ``study.stop()`` only works inside ``optimize``); the sampler
    itself then never draws a value, every trial's params are fixed."""
    import optuna

    if kind in ("grid", "random"):
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed)


def trial_params(trial) -> dict[str, Any]:
    """A trial's params; a trial still WAITING (or killed before it read them) has them only as
    the enqueued ``fixed_params``."""
    return dict(trial.params) or dict(trial.system_attrs.get("fixed_params", {}))


def point_key(params: dict[str, Any]) -> str:
    """A trial's point as text: its encoded params, sorted (the same for a re-enqueued trial)."""
    return json.dumps({k: encode(v) for k, v in params.items()}, sort_keys=True)


# user attrs a trial was enqueued with that a re-enqueued copy must keep (the halving rung it evaluates)
CARRIED_ATTRS = ("halving_rung",)


def requeue(study, trial) -> None:
    """Enqueue a stale or interrupted trial's point again, with the attrs it was enqueued with."""
    carried = {k: trial.user_attrs[k] for k in CARRIED_ATTRS if k in trial.user_attrs}
    study.enqueue_trial(trial_params(trial), user_attrs=carried or None)


def attempt_key(trial) -> str:
    """What a trial does: its point and halving rung. Trials with one key are attempts at the same work."""
    return point_key(trial_params(trial)) + f"|rung={trial.user_attrs.get('halving_rung', 0)}"


def retry_failed(study) -> list[int]:
    """Enqueue again every point whose latest attempt failed (a failed row, or an interrupted or stale
    trial whose re-enqueue was lost to a kill); returns those trials' numbers. Finished points and
    points already waiting or running are left alone."""
    from optuna.trial import TrialState

    latest = {}
    for t in sorted(study.get_trials(deepcopy=False), key=lambda t: t.number):
        latest[attempt_key(t)] = t
    failed = [t for t in latest.values() if t.state == TrialState.FAIL]
    for t in failed:
        requeue(study, t)
    return [t.number for t in failed]


class AttemptsView:
    """The study as its results see it: one attempt per point counts. A failed trial whose point has a
    later finished attempt is ``retried`` (its row gives way to the later one), every trial carries
    ``attempts`` (its place among its point's trials: 2 = the second try) in its ``extra`` columns, and
    a failed trial is ``evaluated = False``. Anything else is the study's own."""

    def __init__(self, study) -> None:
        self._study = study

    def __getattr__(self, name: str):
        return getattr(self._study, name)

    def get_trials(self, deepcopy: bool = False, states=None) -> list:
        """The study's trials (copies where an attribute above differs), optionally of some states."""
        trials = sorted(self._study.get_trials(deepcopy=False), key=lambda t: t.number)
        by_key: dict[str, list] = {}
        for t in trials:
            by_key.setdefault(attempt_key(t), []).append(t)
        out = []
        for t in trials:
            if states is not None and t.state not in states:
                continue
            same = by_key[attempt_key(t)]
            attrs = dict(t.user_attrs)
            attrs["extra"] = {**attrs.get("extra", {}), "attempts": same.index(t) + 1}
            if t.state.name == "FAIL":
                attrs["evaluated"] = False
                if any(u.number > t.number and u.state.is_finished() and not u.user_attrs.get("retried")
                       for u in same):
                    attrs["retried"] = True
            view = copy.copy(t)
            view.user_attrs = attrs
            out.append(view)
        return out


def enqueue_grid(study, points: list[dict[str, Any]]) -> int:
    """Enqueue every grid point not yet in the study (any state); returns how many were added."""
    seen = {json.dumps(trial_params(t), sort_keys=True) for t in study.get_trials(deepcopy=False)}
    added = 0
    for p in points:
        enc = {k: encode(v) for k, v in p.items()}
        if json.dumps(enc, sort_keys=True) not in seen:
            study.enqueue_trial(enc)
            added += 1
    return added


def claim_waiting(study, order=None) -> int | None:
    """Atomically claim one WAITING trial for this process (tried in ``order(trial)`` order when
    given); None when the queue is empty."""
    from optuna.exceptions import UpdateFinishedTrialError
    from optuna.trial import TrialState

    waiting = study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
    for t in sorted(waiting, key=order) if order is not None else waiting:
        try:
            if set_trial_state(study, trial_id_of(t), TrialState.RUNNING):
                # at once, so a kill right after the claim is recognised as a dead worker's trial
                set_trial_system_attr(study, trial_id_of(t), "gradprune_owner", owner_record())
                return trial_id_of(t)
        except UpdateFinishedTrialError:
            continue
    return None


def owner_record() -> dict[str, Any]:
    """Who runs a trial: host, PID and a heartbeat time."""
    return {"host": socket.gethostname(), "pid": os.getpid(), "heartbeat": time.time()}


def is_stale(trial, now: float | None = None) -> bool:
    """A RUNNING trial whose worker is gone."""
    now = now or time.time()
    owner = trial.system_attrs.get("gradprune_owner")
    if owner is None:  # killed between claim and owner record
        start = trial.datetime_start.timestamp() if trial.datetime_start else now
        return now - start > 60
    if owner["host"] == socket.gethostname():
        return owner["pid"] != os.getpid() and not pid_alive(owner["pid"])
    return now - owner["heartbeat"] > STALE_AFTER_S


def recover_stale(study) -> list[int]:
    """Fail each stale RUNNING trial and enqueue its params again (once); returns their numbers."""
    from optuna.exceptions import UpdateFinishedTrialError
    from optuna.trial import TrialState

    recovered = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if not is_stale(t):
            continue
        try:
            # attributes first: a finished trial cannot be updated (two recovering workers write the same)
            set_trial_user_attr(study, trial_id_of(t), "status", "stale")
            set_trial_user_attr(study, trial_id_of(t), "retried", True)
            set_trial_state(study, trial_id_of(t), TrialState.FAIL)
        except UpdateFinishedTrialError:
            continue  # another worker recovered it first
        requeue(study, t)
        recovered.append(t.number)
    return recovered


def wait_until_idle(study, poll_s: float) -> bool:
    """A phase barrier: poll (recovering stale trials) until no trial is running. True as soon as some
    trial is WAITING (the caller claims it instead), False once none is running or waiting."""
    from optuna.trial import TrialState

    while True:
        recover_stale(study)
        states = {t.state for t in study.get_trials(deepcopy=False) if not t.user_attrs.get("retried")}
        if TrialState.WAITING in states:
            return True
        if TrialState.RUNNING not in states:
            return False
        time.sleep(poll_s)


class Heartbeat:
    """Refreshes the owner record of the running trial from a daemon thread."""

    def __init__(self, study, trial_id: int) -> None:
        self.study, self.trial_id = study, trial_id
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, daemon=True)

    def __enter__(self) -> Heartbeat:
        set_trial_system_attr(self.study, self.trial_id, "gradprune_owner", owner_record())
        self._thread.start()
        return self

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            with contextlib.suppress(Exception):  # a missed beat only delays nothing; never kill the trial
                set_trial_system_attr(self.study, self.trial_id, "gradprune_owner", owner_record())

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
