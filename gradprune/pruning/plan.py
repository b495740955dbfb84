"""The pruning plan: which KV groups and MLP channels each layer keeps. Plain JSON on disk.

Indices refer to the *dense* model (KV head ``g`` of layer ``i``, intermediate channel ``c``). A layer
missing from ``layers``, or with ``None`` for a block, is left untouched.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gradprune.errors import PlanError
from gradprune.files import atomic_write_text

FORMAT_VERSION = 1
_PLAN_KEYS = {"model_type", "layers", "meta", "format_version"}
_LAYER_KEYS = {"layer", "attn_kept", "mlp_kept"}


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def check_kept(kept: Any, where: str) -> list[int] | None:
    """A kept-index list must be None or sorted, unique, non-negative ints; returns it as a list."""
    if kept is None:
        return None
    if not isinstance(kept, list | tuple) or not all(_is_int(i) for i in kept):
        raise PlanError(f"{where}: expected a list of ints or null, got {kept!r:.80}")
    if any(i < 0 for i in kept):
        raise PlanError(f"{where}: negative index {min(kept)}")
    if any(a >= b for a, b in zip(kept, kept[1:], strict=False)):
        raise PlanError(f"{where}: indices must be sorted and unique, got {list(kept)!r:.80}")
    return list(kept)


@dataclass
class LayerPlan:
    """Kept KV-group and MLP-channel indices of one layer (None = that block untouched)."""

    layer: int
    attn_kept: list[int] | None = None
    mlp_kept: list[int] | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict."""
        return {"layer": self.layer, "attn_kept": self.attn_kept, "mlp_kept": self.mlp_kept}

    @classmethod
    def from_dict(cls, d: Any, where: str = "layer") -> LayerPlan:
        """Validate and build; errors name ``where`` and the key."""
        if not isinstance(d, dict):
            raise PlanError(f"{where}: expected an object with {sorted(_LAYER_KEYS)}, got {type(d).__name__}")
        unknown = set(d) - _LAYER_KEYS
        if unknown:
            raise PlanError(f"{where}: unknown key(s) {sorted(unknown)}; expected {sorted(_LAYER_KEYS)}")
        if not _is_int(d.get("layer")) or d["layer"] < 0:
            raise PlanError(f"{where}.layer: expected a non-negative int, got {d.get('layer')!r}")
        where = f"{where} (layer {d['layer']})"
        return cls(
            layer=d["layer"],
            attn_kept=check_kept(d.get("attn_kept"), f"{where}.attn_kept"),
            mlp_kept=check_kept(d.get("mlp_kept"), f"{where}.mlp_kept"),
        )


@dataclass
class Plan:
    """A whole-model plan: the model type it was made for, per-layer kept indices, free-form meta."""

    model_type: str
    layers: list[LayerPlan]
    meta: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (what ``save`` writes)."""
        return {
            "format_version": FORMAT_VERSION,
            "model_type": self.model_type,
            "layers": [lp.to_dict() for lp in self.layers],
            "meta": self.meta,
        }

    @classmethod
    def from_dict(cls, d: Any, source: str = "plan") -> Plan:
        """Validate types and structure; every problem is a PlanError naming ``source`` and the key."""
        if not isinstance(d, dict):
            raise PlanError(f"{source}: expected a JSON object, got {type(d).__name__}")
        unknown = set(d) - _PLAN_KEYS
        if unknown:
            raise PlanError(f"{source}: unknown key(s) {sorted(unknown)}; expected {sorted(_PLAN_KEYS)}")
        version = d.get("format_version", FORMAT_VERSION)
        if version != FORMAT_VERSION:
            raise PlanError(
                f"{source}: format_version {version!r} is not supported (expected {FORMAT_VERSION})"
            )
        if not isinstance(d.get("model_type"), str) or not d["model_type"]:
            raise PlanError(f"{source}.model_type: expected a non-empty string, got {d.get('model_type')!r}")
        if not isinstance(d.get("layers"), list):
            raise PlanError(f"{source}.layers: expected a list, got {type(d.get('layers')).__name__}")
        meta = d.get("meta", {})
        if not isinstance(meta, dict):
            raise PlanError(f"{source}.meta: expected an object, got {type(meta).__name__}")
        layers = [LayerPlan.from_dict(x, f"{source}.layers[{i}]") for i, x in enumerate(d["layers"])]
        plan = cls(model_type=d["model_type"], layers=layers, meta=dict(meta))
        plan.check_unique_layers(source)
        return plan

    def check_unique_layers(self, source: str = "plan") -> None:
        """Each layer index appears at most once."""
        seen: set[int] = set()
        for lp in self.layers:
            if lp.layer in seen:
                raise PlanError(f"{source}: layer {lp.layer} appears more than once")
            seen.add(lp.layer)

    def save(self, path: str | Path) -> Path:
        """Write JSON atomically (temp file in the same directory, then ``os.replace``)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            text = json.dumps(self.to_dict(), indent=1, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise PlanError(f"plan for {str(path)!r} is not plain JSON (check plan.meta): {exc}") from None
        atomic_write_text(path, text + "\n")
        return path

    @classmethod
    def load(cls, path: str | Path) -> Plan:
        """Read and validate a plan file; a missing or malformed file is a PlanError naming it."""
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise PlanError(f"plan file {str(path)!r} does not exist") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise PlanError(f"plan file {str(path)!r} is not readable JSON: {exc}") from None
        return cls.from_dict(data, source=str(path))

    def by_layer(self) -> dict[int, LayerPlan]:
        """Layer index -> its LayerPlan."""
        return {lp.layer: lp for lp in self.layers}

    def kept_counts(self, model_config: Any) -> list[tuple[int, int]]:
        """(KV groups, MLP channels) each layer keeps, untouched blocks counted in full."""
        n_kv = int(model_config.num_key_value_heads)
        n_ch = int(model_config.intermediate_size)
        plans = self.by_layer()
        out = []
        for i in range(int(model_config.num_hidden_layers)):
            lp = plans.get(i, LayerPlan(i))
            out.append(
                (
                    n_kv if lp.attn_kept is None else len(lp.attn_kept),
                    n_ch if lp.mlp_kept is None else len(lp.mlp_kept),
                )
            )
        return out

    def is_uniform(self, model_config: Any) -> bool:
        """Every layer keeps the same number of KV groups and the same number of MLP channels."""
        return len(set(self.kept_counts(model_config))) <= 1
