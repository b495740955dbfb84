"""Every Optuna access of a search that Optuna's public API does not offer, in one place.

A search shares one study between processes and needs what ``Study``/``Trial`` keep private: the
study's storage and ids (to claim a WAITING trial atomically, write an owner record while the trial
runs, fail a stale trial another process owns, keep a decision in the study's system attrs) and the
journal file's lock (to append whole records only). The storage's own methods (``BaseStorage``) are
public; reaching them from a ``Study`` is not. Checked on Optuna 5.1.0 (pyproject allows ``optuna>=4``;
the attributes used here are the same in 4.x); if an Optuna release renames them, this module is the one
to change.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def storage_of(study):
    """The study's storage (the Study's private ``_storage``: Optuna has no public accessor; the storage's methods are
    public ``BaseStorage`` API)."""
    return study._storage


def study_id_of(study) -> int:
    """The study's id in its storage (the Study's private ``_study_id``; the public route,
    ``storage.get_study_id_from_name``, costs a storage round trip per call)."""
    return study._study_id


def trial_id_of(trial) -> int:
    """A trial's id in the storage (the private ``_trial_id`` of a Trial or FrozenTrial): the storage's
    per-trial methods take it, ``trial.number`` is only unique within the study and maps to the id
    through one more storage round trip (``get_trial_id_from_study_id_trial_number``)."""
    return trial._trial_id


def stored_trial(study, trial_id: int):
    """The trial's current FrozenTrial, read from the storage (not the study's cache)."""
    return storage_of(study).get_trial(trial_id)


def set_trial_system_attr(study, trial_id: int, key: str, value: Any) -> None:
    """Set a system attr of a trial by id (Optuna 5 has no public ``set_system_attr`` on a trial, and
    a heartbeat thread or a recovering worker has the id only)."""
    storage_of(study).set_trial_system_attr(trial_id, key, value)


def set_trial_user_attr(study, trial_id: int, key: str, value: Any) -> None:
    """Set a user attr of a trial by id, also of a trial this process does not run (a stale one)."""
    storage_of(study).set_trial_user_attr(trial_id, key, value)


def set_trial_state(study, trial_id: int, state) -> bool:
    """Move a trial to ``state``; True only for the one process whose update took effect (a WAITING
    trial moved to RUNNING is claimed by exactly one worker). Raises Optuna's
    ``UpdateFinishedTrialError`` for a trial that already ended."""
    return storage_of(study).set_trial_state_values(trial_id, state=state)


def study_system_attrs(study) -> dict[str, Any]:
    """The study's system attrs, read from the storage (Optuna 5 has no public ``Study.system_attrs``)."""
    return storage_of(study).get_study_system_attrs(study_id_of(study))


def set_study_system_attr(study, key: str, value: Any) -> None:
    """Store ``value`` under ``key`` in the study's system attrs (no public ``Study.set_system_attr`` in Optuna 5)."""
    storage_of(study).set_study_system_attr(study_id_of(study), key, value)


@contextlib.contextmanager
def journal_lock(path: str | Path) -> Iterator[None]:
    """Hold the lock Optuna's journal file backend takes for every append (``JournalFileOpenLock`` is
    public; acquiring it is ``optuna.storages.journal._file.get_lock_file``, a private helper)."""
    from optuna.storages.journal import JournalFileOpenLock
    from optuna.storages.journal._file import get_lock_file

    with get_lock_file(JournalFileOpenLock(str(path))):
        yield


def cut_partial_record(path: str | Path) -> int:
    """Truncate a partial last line off the journal (call under its lock); returns the bytes cut."""
    with open(path, "r+b") as fh:
        end = fh.seek(0, os.SEEK_END)
        if end == 0:
            return 0
        fh.seek(end - 1)
        if fh.read(1) == b"\n":
            return 0
        cut, pos = 0, end
        while pos > 0:  # back to the last newline, a chunk at a time (a record can be large)
            start = max(0, pos - 65536)
            fh.seek(start)
            at = fh.read(pos - start).rfind(b"\n")
            if at >= 0:
                cut = start + at + 1
                break
            pos = start
        fh.truncate(cut)
        fh.flush()
        os.fsync(fh.fileno())
        return end - cut


def whole_records_backend(path: str):
    """Optuna's JournalFileBackend whose every append first cuts off a partial last record, under the
    journal's lock: a worker killed mid-append while others go on would otherwise have the next append
    continue its line and merge two records (every later read of the file would fail). It overrides
    ``append_logs`` and reads the backend's private ``_lock`` and ``_file_path``."""
    from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock
    from optuna.storages.journal._file import get_lock_file

    class WholeRecordsBackend(JournalFileBackend):
        def append_logs(self, logs: list[dict[str, Any]]) -> None:
            with get_lock_file(self._lock):
                cut_partial_record(self._file_path)
                text = "\n".join(json.dumps(log, separators=(",", ":")) for log in logs) + "\n"
                with open(self._file_path, "ab") as fh:
                    fh.write(text.encode("utf-8"))
                    fh.flush()
                    os.fsync(fh.fileno())

    return WholeRecordsBackend(path, lock_obj=JournalFileOpenLock(path))
