"""The hint added to every "cannot be loaded" error of an evaluation data set."""

from __future__ import annotations

import os


def offline_hint(alternative: str) -> str:
    """Why a hub data set may be unreachable and what to use instead (``alternative``)."""
    flags = [f"{k}={os.environ[k]}" for k in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE") if os.environ.get(k)]
    state = f" ({', '.join(flags)} {'is' if len(flags) == 1 else 'are'} set)" if flags else ""
    return (
        f"Offline{state}, a hub data set loads only from the local datasets cache: run once with network "
        f"access (HF_DATASETS_OFFLINE unset) to cache it, or {alternative}"
    )
