"""Telling an unreachable or uncached hub data set apart from other load failures, and what to do about it.

Only a failure that is really about the network (offline mode on, the hub unreachable, the file not in
the local cache) gets the offline hint; a missing repo, a wrong file name or a broken file is reported as
what it is, since "run once with network access" would not fix it.
"""

from __future__ import annotations

import os

# Exception classes (matched by name, so this module imports neither datasets nor huggingface_hub) that
# mean "could not reach the hub, and the data is not cached": datasets raises ConnectionError when offline,
# huggingface_hub raises LocalEntryNotFoundError / OfflineModeIsEnabled, httpx ConnectError / timeouts.
_OFFLINE_ERRORS = frozenset({"ConnectionError", "TimeoutError", "OfflineModeIsEnabled", "LocalEntryNotFoundError",
                             "ConnectError", "TimeoutException"})
_FLAGS = ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE")


def is_offline_error(exc: BaseException) -> bool:
    """True when ``exc`` (or an exception it was raised from) says the hub is unreachable and nothing is cached."""
    seen: set[int] = set()
    pending: list[BaseException] = [exc]
    while pending:
        e = pending.pop()
        if id(e) in seen:
            continue
        seen.add(id(e))
        if any(cls.__name__ in _OFFLINE_ERRORS for cls in type(e).__mro__):
            return True
        pending.extend(c for c in (e.__cause__, e.__context__) if c is not None)
    return False


def offline_hint(alternative: str, fetch: str | None = None) -> str:
    """The hint for an offline failure: why (the flags set, or no network), how to cache it (``fetch``, a
    command), or what to use instead (``alternative``)."""
    flags = [f"{k}={os.environ[k]}" for k in _FLAGS if os.environ.get(k) not in (None, "", "0")]
    why = f"offline mode is on ({', '.join(flags)})" if flags else "the hub could not be reached"
    how = f"fetch it once with network access: {fetch}" if fetch else \
        "run once with network access (offline flags unset) to cache it"
    return f"It is not in the local cache and {why}: {how}; or {alternative}"
