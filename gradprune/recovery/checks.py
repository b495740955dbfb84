"""What preflight checks of a recipe's ``recovery`` section before any weight loads.

The method's params (a target that is no projection, rank 0, a batch that is no multiple of the
micro-batch) are refused when the recipe is read. Here: the recovery data builds and its first record has
the template's fields (or the first document has text), and the cutoff fits the model's positions.
"""

from __future__ import annotations

from typing import Any

from gradprune.errors import GradpruneError


def recovery_problems(recipe: Any, config: Any, load_data: bool = True) -> list[str]:
    """Every problem of ``recipe.recovery`` that the model's ``config`` (None: not known) and the first
    record of its data show; empty when there is no recovery section."""
    from gradprune import plugins

    section = recipe.recovery
    if section is None:
        return []
    try:
        params = plugins.RECOVERY.build(section.name, section.params, "recovery.params").params
    except GradpruneError as exc:  # reported by the recipe check already; listed again only if it got here
        return exc.lines()
    found = []
    max_pos = getattr(config, "max_position_embeddings", None)
    if isinstance(max_pos, int) and params.cutoff_len > max_pos:
        found.append(f"recovery.params.cutoff_len={params.cutoff_len} is above the model's "
                     f"max_position_embeddings={max_pos}")
    if load_data:
        found += _data_problems(section.dataset)
    return found


def _data_problems(dataset: Any) -> list[str]:
    from gradprune import plugins

    ds = dataset.model_dump()
    name = ds.pop("name")
    try:
        source = plugins.DATA.build(name, ds, "recovery.dataset")
        source.key = "recovery.dataset"
        items = iter(source.records() if hasattr(source, "records") else source.documents())
        try:
            first = next(items, None)
        finally:
            close = getattr(items, "close", None)
            if close is not None:
                close()
    except GradpruneError as exc:
        return exc.lines()
    except Exception as exc:  # a third-party source may raise anything; the run would fail the same way
        return [f"recovery.dataset ({name}): cannot be read: {type(exc).__name__}: {' '.join(str(exc).split())}"]
    return [] if first is not None else [f"recovery.dataset ({source.describe()}) holds no record or text"]
