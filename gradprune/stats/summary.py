"""Cross-layer summaries of per-layer values: ``<stat>_ratio`` = max over layers / min over layers, and
the extreme layers (pruned by more than a threshold; the record counts them as ``extreme_pruning_layers``).

Ratios are taken over |value| (the mean gradient is signed; its sign says nothing about spread).
A ratio whose minimum is 0 is undefined and recorded as ``None`` rather than infinity.
"""

from __future__ import annotations

import math


def ratio_summary(name: str, values: list[float]) -> dict[str, float | int | None]:
    """``{name}_ratio``, ``{name}_max_layer``, ``{name}_min_layer`` from per-layer values."""
    mags = [abs(v) for v in values]
    if not mags or any(not math.isfinite(v) for v in mags):
        return {f"{name}_ratio": None, f"{name}_max_layer": None, f"{name}_min_layer": None}
    hi = max(range(len(mags)), key=mags.__getitem__)
    lo = min(range(len(mags)), key=mags.__getitem__)
    ratio = mags[hi] / mags[lo] if mags[lo] > 0 else None
    return {f"{name}_ratio": ratio, f"{name}_max_layer": hi, f"{name}_min_layer": lo}


def extreme_layers(pruned_fraction: list[float], threshold: float) -> list[int]:
    """Layers whose prunable parameters were removed by more than ``threshold`` (e.g. 0.8)."""
    return [i for i, f in enumerate(pruned_fraction) if f > threshold]
