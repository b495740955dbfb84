"""The largest pruning ratio the planner can reach, from the model's config alone (no weights).

Preflight refuses an unreachable ``pruning.ratio`` before anything loads; the planner's own rules
(layer ranges, ``min_keep``, ``round_to``) are mirrored here, and tests check both agree.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class LayerGroups:
    """One decoder layer's prunable groups: how many of each kind and the parameters one removes."""

    n_kv: int
    attn_cost: int
    n_channels: int
    mlp_cost: int


@dataclass(frozen=True)
class ModelShape:
    """The model's parameter count (as ``ArchitectureAdapter.count_params`` counts) and its layers' groups."""

    total: int
    layers: tuple[LayerGroups, ...]


def model_shape(config: Any) -> ModelShape:
    """The shape of the model ``config`` describes, from the model built on the meta device.

    Building it there allocates no memory and reads no weights (about a second for a 7B config), and the
    group sizes then come from the same adapter code the planner uses, biases and tied embeddings included.
    """
    import torch
    from transformers import AutoModelForCausalLM

    from gradprune.models.adapters import get_adapter

    adapter = get_adapter(config)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    layers = tuple(LayerGroups(lm.n_kv, lm.attn_group_params(), lm.n_channels, lm.mlp_group_params())
                   for lm in adapter.layers(model))
    return ModelShape(adapter.count_params(model), layers)


SHAPE_FORMAT = 1


def cached_model_shape(config: Any) -> ModelShape:
    """:func:`model_shape`, remembered in ``$GRADPRUNE_CACHE/shapes`` by the config's contents (and the
    transformers version that builds it): building the model imports its modeling code, seconds that
    ``gradprune validate`` should not spend on every call. A cache that cannot be read or written is
    bypassed."""
    import hashlib
    import json
    from importlib import metadata

    from gradprune.files import atomic_write_json, cache_root

    key = json.dumps({"format": SHAPE_FORMAT, "transformers": metadata.version("transformers"),
                      "config": config.to_dict()}, sort_keys=True, default=str)
    path = cache_root() / "shapes" / f"{hashlib.sha256(key.encode()).hexdigest()[:24]}.json"
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
        return ModelShape(int(d["total"]), tuple(LayerGroups(*map(int, g)) for g in d["layers"]))
    except (OSError, ValueError, KeyError, TypeError):
        pass
    shape = model_shape(config)
    with contextlib.suppress(OSError):  # not written: only the next call is slower
        atomic_write_json(path, {"total": shape.total, "layers": [[g.n_kv, g.attn_cost, g.n_channels, g.mlp_cost]
                                                                  for g in shape.layers]}, indent=None)
    return shape


@dataclass(frozen=True)
class Reach:
    """How many of the model's parameters the planner can remove at most under a recipe's pruning keys."""

    total: int
    removable: int

    @property
    def max_ratio(self) -> float:
        """The largest ``pruning.ratio`` the planner can reach."""
        return self.removable / self.total if self.total else 0.0

    def allows(self, ratio: float) -> bool:
        """Whether ``ratio`` is reachable (the planner's own comparison, so both always agree)."""
        return not self.removable < ratio * self.total


def reach(shape: ModelShape, pruning: Any) -> Reach:
    """The most parameters ``planner.plan_pruning`` can remove under ``pruning`` (a PruningSection).

    The planner's rules: groups of the allowed layer ranges only, ``min_keep`` groups of each (layer, kind)
    always kept, and with ``round_to`` > 1 removed MLP channels taken back until each kept width is a
    multiple of it. Layer ranges must fit the model (``planner.allowed_layers`` says why not).
    """
    from gradprune.pruning.planner import allowed_layers

    n = len(shape.layers)
    removable = 0
    if pruning.prune_attention:
        for li in allowed_layers(n, pruning.attention_layers, "attention_layers"):
            g = shape.layers[li]
            removable += max(0, g.n_kv - pruning.min_keep) * g.attn_cost
    if pruning.prune_mlp:
        for li in allowed_layers(n, pruning.mlp_layers, "mlp_layers"):
            g = shape.layers[li]
            free = max(0, g.n_channels - pruning.min_keep)
            if pruning.round_to > 1:
                free -= min(free, (free - g.n_channels) % pruning.round_to)
            removable += free * g.mlp_cost
    return Reach(shape.total, removable)


def _layers_text(rng: tuple[int, int | None] | None, n_layers: int) -> str:
    from gradprune.pruning.planner import allowed_layers

    r = allowed_layers(n_layers, rng, "")
    return f"layers [{r.start}, {r.stop})"


def unreachable_message(r: Reach, pruning: Any, model: str, n_layers: int) -> str:
    """Why ``pruning.ratio`` cannot be reached, naming the maximum and what would raise it."""
    where = []
    if pruning.prune_attention:
        where.append(f"attention groups of {_layers_text(pruning.attention_layers, n_layers)}")
    if pruning.prune_mlp:
        where.append(f"MLP channels of {_layers_text(pruning.mlp_layers, n_layers)}")
    cap = math.floor(r.max_ratio * 10_000) / 10_000  # rounded down, so the suggestion is reachable
    advice = (f"use pruning.ratio <= {cap:g}" if cap > 0 else "nothing can be pruned") + \
        " or widen pruning.attention_layers / pruning.mlp_layers (or lower min_keep / round_to)"
    return (f"pruning.ratio={pruning.ratio} cannot be reached: model {model!r} has {r.total:,} parameters, of "
            f"which at most {r.removable:,} ({r.max_ratio:.2%}) are removable: the {' and '.join(where)} "
            f"with min_keep={pruning.min_keep}, round_to={pruning.round_to} (embeddings and norms are never "
            f"pruned); {advice}")
