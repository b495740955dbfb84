"""The places a recipe names plugins, how their params are checked, and what an override switch does.

A recipe names a plugin in these places, each with its params:

* ``importance.name`` with ``importance.params``, ``normalizer.name`` with ``normalizer.params``;
* ``stats.collectors`` (a list of names) with ``stats.params.<collector>``;
* ``calibration.dataset.name`` with the dataset's other keys;
* ``logger.name`` with ``logger.params`` (optional: no tracker without a ``logger`` section);
* when the recipe has a ``recovery`` section: ``recovery.name`` with ``recovery.params``, and
  ``recovery.dataset.name`` with that dataset's other keys.

:func:`plugin_problems` checks every one of them (names, then params against each plugin's ``Params``)
and returns every problem, so a recipe's errors are reported together. :func:`carry_params` is the rule
for params when an override switches a plugin: see its docstring and docs/plugins.md.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from gradprune.errors import GradpruneError, GradpruneWarning, did_you_mean

DEFAULT_COLLECTORS = ("grad_norm", "grad_mean", "grad_std", "grad_max", "grad_var", "grad_snr")


class PluginSection(BaseModel):
    """A plugin named by its registry name plus its own params."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str
    params: dict[str, Any] = Field(default_factory=dict)


class DatasetSection(BaseModel):
    """A calibration data source from the data registry; other keys go to that source."""

    model_config = ConfigDict(extra="allow", frozen=True)
    name: str = "embedded"


class RecoverySection(BaseModel):
    """Training after pruning (off unless the recipe has this section): a recovery method by registry name,
    its params (the method's own and the training settings), and the data it trains on."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str = "lora"
    params: dict[str, Any] = Field(default_factory=dict)
    dataset: DatasetSection = Field(default_factory=DatasetSection)
    #: also save the adapter merged into the weights, as a whole pruned checkpoint (needs output.save_model)
    save_merged: bool = False


@dataclass(frozen=True)
class Slot:
    """One plugin a recipe names: its family, the dotted keys of its name and params, its default.

    ``params_key`` is a mapping of params, or (``inline``) the section whose other keys are the params.
    """

    family: str
    name_key: str
    params_key: str
    default: str
    inline: bool = False
    #: an optional section the slot belongs to: without it in the recipe, the slot names nothing
    section: str | None = None


IMPORTANCE = Slot("importance", "importance.name", "importance.params", "taylor")
NORMALIZER = Slot("normalizers", "normalizer.name", "normalizer.params", "zscore")
DATASET = Slot("data", "calibration.dataset.name", "calibration.dataset", "embedded", inline=True)
RECOVERY = Slot("recovery", "recovery.name", "recovery.params", "lora", section="recovery")
RECOVERY_DATASET = Slot("data", "recovery.dataset.name", "recovery.dataset", "embedded", inline=True,
                        section="recovery")
LOGGER = Slot("loggers", "logger.name", "logger.params", "", section="logger")
SLOTS = (IMPORTANCE, NORMALIZER, DATASET, RECOVERY, RECOVERY_DATASET, LOGGER)


def _get(data: Any, dotted: str, default: Any = None) -> Any:
    for part in dotted.split("."):
        if not isinstance(data, Mapping) or part not in data:
            return default
        data = data[part]
    return data


def _params(data: Any, slot: Slot) -> dict[str, Any] | None:
    """The slot's params in a recipe dict (the live dict: inline params are the section itself)."""
    found = _get(data, slot.params_key, {})
    return found if isinstance(found, dict) else None


def _picks(data: Mapping[str, Any]) -> list[tuple[Slot, str, dict[str, Any]]]:
    """(slot, plugin name, params) of every plugin the recipe dict names in a well-formed place."""
    out = []
    for slot in SLOTS:
        if slot.section is not None and not isinstance(_get(data, slot.section), Mapping):
            continue
        name, params = _get(data, slot.name_key, slot.default), _params(data, slot)
        if isinstance(name, str) and params is not None:
            out.append((slot, name, {k: v for k, v in params.items() if not (slot.inline and k == "name")}))
    collectors = _get(data, "stats.collectors", list(DEFAULT_COLLECTORS))
    params = _get(data, "stats.params", {})
    if isinstance(collectors, list) and isinstance(params, dict):
        for c in dict.fromkeys(x for x in collectors if isinstance(x, str)):
            p = params.get(c, {})
            if isinstance(p, dict):
                out.append((Slot("collectors", "stats.collectors", f"stats.params.{c}", ""), c, p))
    return out


def plugin_problems(data: Mapping[str, Any], load: bool = True) -> list[str]:
    """Every problem of the plugins a recipe dict names: unknown names, ``stats.params`` for a collector the
    recipe does not list and, with ``load``, plugins that fail to load and params that do not fit. Loading
    imports the plugins (torch, for the built-ins), so a recipe with schema errors is checked without it
    and its error comes in well under a second. Badly shaped sections are left to the schema."""
    from gradprune import plugins

    problems = []
    for slot, name, params in _picks(data):
        registry = plugins.FAMILIES[slot.family]
        try:
            registry.entry(name)
            if load:
                registry.get(name)
        except GradpruneError as exc:
            problems += [f"{slot.name_key}: {line}" for line in exc.lines()]
            continue
        try:
            if load:
                registry.validate_params(name, params, slot.params_key)
        except GradpruneError as exc:
            problems += exc.lines()
    collectors, params = _get(data, "stats.collectors"), _get(data, "stats.params")
    if isinstance(collectors, list) and isinstance(params, dict):
        listed = [c for c in collectors if isinstance(c, str)]
        problems += [f"stats.params.{k}: {k!r} is not in stats.collectors ({', '.join(listed) or 'empty'}); "
                     f"params go to a listed collector.{did_you_mean(str(k), listed)}"
                     for k in params if k not in listed]
    return problems


# ---------------------------------------------------------------------------------------------
# an override that switches a plugin


def _set_by(keys: Iterable[str], dotted: str, below: bool = False) -> bool:
    """Whether an override key sets ``dotted`` (itself or a section above it; ``below``: or a key in it)."""
    return any(dotted == k or dotted.startswith(k + ".") or (below and k.startswith(dotted + ".")) for k in keys)


def _unfit(registry: Any, name: str, params: Mapping[str, Any], keep: set[str]) -> dict[str, str]:
    """The params (not in ``keep``) that plugin ``name`` does not take, or that its preset binds otherwise,
    each with why; nothing for an unknown or broken plugin (validation names it)."""
    try:
        fields, preset = registry.params_model(name).model_fields, registry.entry(name).preset
    except GradpruneError:
        return {}
    why = {}
    for k, v in params.items():
        if k in keep:
            continue
        if k not in fields:
            why[k] = f"{name!r} takes no {k!r}"
        elif k in preset and preset[k] != v:
            why[k] = f"preset {name!r} binds {k}: {preset[k]}"
    return why


def _carry_slot(before: Mapping[str, Any], after: dict[str, Any], keys: list[str], slot: Slot) -> str | None:
    from gradprune import plugins

    old, new = _get(before, slot.name_key, slot.default), _get(after, slot.name_key, slot.default)
    params = _params(after, slot)
    if old == new or not isinstance(new, str) or not params or not _set_by(keys, slot.name_key):
        return None
    keep = {k for k in params if _set_by(keys, f"{slot.params_key}.{k}", below=True)} | ({"name"} if slot.inline else set())
    dropped = _unfit(plugins.FAMILIES[slot.family], new, params, keep)
    for k in dropped:
        del params[k]
    if not dropped:
        return None
    what = "; ".join(f"{slot.params_key}.{k} ({why})" for k, why in dropped.items())
    return (f"{slot.name_key} switched from {old!r} to {new!r} by an override: dropped the recipe's params "
            f"written for {old!r} that do not fit {new!r}: {what}")


def _carry_collectors(before: Mapping[str, Any], after: dict[str, Any], keys: list[str]) -> str | None:
    params, collectors = _get(after, "stats.params"), _get(after, "stats.collectors")
    if not isinstance(params, dict) or not isinstance(collectors, list) or not _set_by(keys, "stats.collectors"):
        return None
    if _get(before, "stats.collectors") == collectors:
        return None
    dropped = [k for k in params if k not in collectors and not _set_by(keys, f"stats.params.{k}", below=True)]
    for k in dropped:
        del params[k]
    if not dropped:
        return None
    return (f"stats.collectors changed by an override: dropped the recipe's params of the collectors it no "
            f"longer lists: {', '.join(f'stats.params.{k}' for k in dropped)}")


def carry_params(before: Mapping[str, Any], after: dict[str, Any], keys: list[str]) -> None:
    """After overrides (dotted ``keys``) turned recipe dict ``before`` into ``after``: when they switched a
    plugin (``importance.name=fisher``), the recipe's params carry over only where the new plugin takes them
    and its preset does not bind them otherwise; the others are removed from ``after`` with a
    GradpruneWarning naming the switch. Params the overrides set themselves are kept (a wrong one is an
    error). Params of collectors an override took off ``stats.collectors`` go the same way."""
    notes = [_carry_slot(before, after, keys, slot) for slot in SLOTS]
    notes.append(_carry_collectors(before, after, keys))
    for note in filter(None, notes):
        warnings.warn(note, GradpruneWarning, stacklevel=4)  # the caller of load_recipe/apply_overrides
