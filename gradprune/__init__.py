"""gradprune: gradient-based structured pruning of LLMs."""

from __future__ import annotations

from typing import Any

__all__ = ["load_pruned"]


def __getattr__(name: str) -> Any:
    # Lazy: `import gradprune` (and the CLI's --help) must not import torch or transformers.
    if name == "load_pruned":
        from gradprune.cut.checkpoint import load_pruned

        return load_pruned
    raise AttributeError(f"module 'gradprune' has no attribute {name!r}")
