"""What preflight checks of a recipe's ``recovery`` section beyond the recipe itself, before any weight loads.

The method's params (a target that is no projection, rank 0, a batch that is no multiple of the
micro-batch) are refused when the recipe is read, and preflight reads the first record of the recovery
data as it does the calibration data's (an instruction record lacking the template's fields is refused
there). Here: what the model's config bounds.
"""

from __future__ import annotations

from typing import Any

from gradprune.errors import GradpruneError


def recovery_problems(recipe: Any, config: Any) -> list[str]:
    """The problems of ``recipe.recovery`` that the model's ``config`` (None: not known) shows; empty when
    the recipe has no recovery section."""
    from gradprune import plugins

    section = recipe.recovery
    if section is None:
        return []
    try:
        params = plugins.RECOVERY.build(section.name, section.params, "recovery.params").params
    except GradpruneError as exc:  # the recipe check names it already; repeated only if it got this far
        return exc.lines()
    max_pos = getattr(config, "max_position_embeddings", None)
    if isinstance(max_pos, int) and params.cutoff_len > max_pos:
        return [f"recovery.params.cutoff_len={params.cutoff_len} is above the model's "
                f"max_position_embeddings={max_pos}"]
    return []
