"""Architecture adapters: the prunable groups of each decoder layer.

Two group kinds per layer:

* attention: one group = one KV head, the ``n_rep`` query heads that read it (HF ``repeat_kv``: query
  head ``h`` uses KV head ``h // n_rep``, so they are consecutive rows of ``q_proj``) and the matching
  ``o_proj`` input columns;
* mlp: one group = one intermediate channel (a ``gate_proj`` row, an ``up_proj`` row, a ``down_proj``
  column).

Everything here reads the *current* shapes of the modules, so it stays right after surgery. Only torch
is imported: transformers is never needed to describe a loaded model.

Supported: every architecture whose attention has separate ``q/k/v/o_proj``, reshapes with ``-1`` heads
and reads only ``head_dim`` and ``num_key_value_groups`` (both unchanged by removing whole KV groups),
and whose MLP has separate ``gate/up/down_proj``. Per-head norms over ``head_dim`` (qwen3's and gemma3's
``q_norm``/``k_norm``, one weight shared by every head) are untouched by the cut, as are logit soft-caps
and sliding windows (gemma2, gemma3), which act per head and per position. ``REFUSED_MODEL_TYPES``
says why the architectures that do not fit are refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from gradprune.errors import ModelError

# Roles whose tensors are cut by attention groups / by MLP channels. ``o_bias`` and ``down_bias`` belong
# to their block but no group removes any of their elements (group_view gives them zero columns).
ROLES_ATTN = ("q", "k", "v", "o", "q_bias", "k_bias", "v_bias", "o_bias")
ROLES_MLP = ("gate", "up", "down", "gate_bias", "up_bias", "down_bias")
UNGROUPED_ROLES = ("o_bias", "down_bias")

# role -> (LayerModules field, tensor attribute)
_ROLE_SOURCE: dict[str, tuple[str, str]] = {
    **{r: (r, "weight") for r in ("q", "k", "v", "o", "gate", "up", "down")},
    **{f"{r}_bias": (r, "bias") for r in ("q", "k", "v", "o", "gate", "up", "down")},
}
#: roles whose groups are columns of the weight (the projection's inputs); the others' groups are rows
COLUMN_ROLES = ("o", "down")


@dataclass
class LayerModules:
    """The prunable modules of one decoder layer and the attention geometry they share."""

    index: int
    q: nn.Linear
    k: nn.Linear
    v: nn.Linear
    o: nn.Linear
    gate: nn.Linear
    up: nn.Linear
    down: nn.Linear
    head_dim: int
    n_rep: int
    attn: nn.Module
    mlp: nn.Module

    @property
    def n_kv(self) -> int:
        """Current number of KV heads (= attention groups)."""
        return self.k.out_features // self.head_dim

    @property
    def n_channels(self) -> int:
        """Current number of MLP intermediate channels (= MLP groups)."""
        return self.gate.out_features

    @property
    def hidden_size(self) -> int:
        """Width of the residual stream (input of q/k/v/gate/up, output of o/down)."""
        return self.q.in_features

    def attn_group_params(self) -> int:
        """Parameters removed with one KV group: its q/k/v rows (+ biases) and o_proj columns."""
        hidden, width = self.hidden_size, self.head_dim
        q_rows = self.n_rep * width * (hidden + (self.q.bias is not None))
        kv_rows = sum(width * (hidden + (m.bias is not None)) for m in (self.k, self.v))
        return q_rows + kv_rows + self.o.out_features * self.n_rep * width

    def mlp_group_params(self) -> int:
        """Parameters removed with one MLP channel: gate and up rows (+ biases), a down column."""
        hidden = self.hidden_size
        rows = sum(hidden + (m.bias is not None) for m in (self.gate, self.up))
        return rows + self.down.out_features

    def weights(self) -> dict[str, nn.Parameter]:
        """Role -> parameter for every present weight and bias (roles in ROLES_ATTN + ROLES_MLP)."""
        return {role: getattr(module, attr) for role, (module, attr) in self.sources().items()}

    def sources(self) -> dict[str, tuple[nn.Module, str]]:
        """Role -> (module, attribute) holding it, for every present weight and bias: where a sharded
        model (FSDP) swaps in the unsharded parameter during forward and backward."""
        out: dict[str, tuple[nn.Module, str]] = {}
        for role, (field, attr) in _ROLE_SOURCE.items():
            module = getattr(self, field)
            if getattr(module, attr) is not None:
                out[role] = (module, attr)
        return out

    def n_groups(self, role: str) -> int:
        """Number of groups that cut the tensor of ``role`` (KV heads or MLP channels)."""
        return self.n_kv if role_kind(role) == "attn" else self.n_channels


def role_kind(role: str) -> str:
    """``"attn"`` or ``"mlp"``: which group kind cuts the tensor of ``role`` (``o_bias`` is attn)."""
    if role in ROLES_ATTN:
        return "attn"
    if role in ROLES_MLP:
        return "mlp"
    raise ValueError(f"unknown role {role!r}; expected one of {ROLES_ATTN + ROLES_MLP}")


def rows_per_group(role: str, layer: LayerModules) -> int:
    """Rows (columns for ``o``/``down``; elements for a bias) of the role's tensor that one group removes."""
    base = role.removesuffix("_bias")
    if base in ("q", "o"):
        return layer.n_rep * layer.head_dim
    if base in ("k", "v"):
        return layer.head_dim
    return 1


def group_view3(t: Tensor, role: str, layer: LayerModules) -> Tensor:
    """A 3-d *view* ``[n_groups, a, b]`` of ``t`` (shaped like the role's weight or bias).

    ``[g]`` holds exactly the elements group ``g`` removes. Always a view (writes go through), which is
    why masking uses it; ``group_view`` flattens it to 2-d.
    """
    field, attr = _ROLE_SOURCE.get(role, (None, None))
    if field is None:
        raise ValueError(f"unknown role {role!r}; expected one of {ROLES_ATTN + ROLES_MLP}")
    expected = getattr(getattr(layer, field), attr)
    if expected is None or t.shape != expected.shape:
        shape = None if expected is None else tuple(expected.shape)
        raise ValueError(f"layer {layer.index} role {role!r}: tensor shape {tuple(t.shape)} != {shape}")
    n = layer.n_groups(role)
    if not t.is_contiguous():
        t = t.contiguous()  # rare (gradients are contiguous); the result is then a view of a copy
    if role in UNGROUPED_ROLES:
        # No group removes any element: every group owns an empty slice.
        return t.as_strided((n, 1, 0), (0, 0, 1))
    size = rows_per_group(role, layer)
    if t.dim() == 1:
        return t.view(n, 1, size)
    if role in COLUMN_ROLES:
        # [out, n*size] -> [out, n, size] -> [n, out, size]: columns of group g, no copy.
        return t.view(t.shape[0], n, size).transpose(0, 1)
    return t.view(n, size, t.shape[1])


def group_view(t: Tensor, role: str, layer: LayerModules) -> Tensor:
    """``t`` as ``[n_groups, m]``: row ``g`` holds exactly the elements that group ``g`` removes.

    A view for every role except ``o`` with ``n_rep * head_dim > 1`` columns per group, where the
    groups' columns are not evenly strided in memory and ``reshape`` copies once (an o_proj-sized
    tensor); ``group_view3(...).sum((1, 2))`` gives per-group sums without that copy.
    """
    g3 = group_view3(t, role, layer)
    return g3.reshape(g3.shape[0], -1)


def group_sum(t: Tensor, role: str, layer: LayerModules, dtype: torch.dtype | None = None) -> Tensor:
    """Per-group sum of ``t`` (shape ``[n_groups]``), without copying ``t``."""
    return group_view3(t, role, layer).sum(dim=(1, 2), dtype=dtype)


def row_axis(role: str) -> int:
    """The dim of the role's 2-d weight that its groups cut: 0 (rows) or 1 (columns, ``o``/``down``)."""
    return 1 if role in COLUMN_ROLES else 0


def by_group(per_row: Tensor, role: str, layer: LayerModules) -> Tensor:
    """A vector with one value per row the groups cut (per column for ``o``/``down``, per element for a
    bias) as ``[n_groups, rows_per_group]``: row ``g`` holds the values of group ``g``'s rows."""
    return per_row.view(layer.n_groups(role), rows_per_group(role, layer))


class ArchitectureAdapter:
    """Finds the prunable modules of a decoder-only model with llama-style module names."""

    model_types: tuple[str, ...] = ("llama", "mistral", "qwen2", "qwen3", "gemma2", "gemma3_text")

    def decoder_layers(self, model: nn.Module) -> nn.ModuleList:
        """The ``ModuleList`` of decoder layers of a ``*ForCausalLM`` (or its base model)."""
        base = getattr(model, "model", model)
        layers = getattr(base, "layers", None)
        if not isinstance(layers, nn.ModuleList):
            raise ModelError(f"{type(model).__name__} has no decoder layers at .model.layers")
        return layers

    def layer_modules(self, index: int, layer: nn.Module) -> LayerModules:
        """The ``LayerModules`` of one decoder layer."""
        attn, mlp = layer.self_attn, layer.mlp
        return LayerModules(
            index=index,
            q=attn.q_proj,
            k=attn.k_proj,
            v=attn.v_proj,
            o=attn.o_proj,
            gate=mlp.gate_proj,
            up=mlp.up_proj,
            down=mlp.down_proj,
            head_dim=int(attn.head_dim),
            n_rep=int(attn.num_key_value_groups),
            attn=attn,
            mlp=mlp,
        )

    def layers(self, model: nn.Module) -> list[LayerModules]:
        """Prunable modules of every decoder layer, in order."""
        return [self.layer_modules(i, layer) for i, layer in enumerate(self.decoder_layers(model))]

    def count_params(self, model: nn.Module) -> int:
        """Number of unique parameters (tied embeddings counted once)."""
        seen: set[tuple[int, int, tuple[int, ...]]] = set()
        total = 0
        for p in model.parameters():  # already skips repeated Parameter objects
            # Distinct Parameter objects can still share storage (tied by data, not by identity).
            real = p.device.type != "meta" and p.numel() > 0
            key = (
                (p.untyped_storage().data_ptr(), p.storage_offset(), tuple(p.shape))
                if real
                else (id(p), 0, ())
            )
            if key not in seen:
                seen.add(key)
                total += p.numel()
        return total


_ADAPTERS: dict[str, ArchitectureAdapter] = {
    t: ArchitectureAdapter() for t in ArchitectureAdapter.model_types
}
SUPPORTED_MODEL_TYPES: tuple[str, ...] = tuple(_ADAPTERS)

#: model_type -> why structured pruning refuses it (checked before any weight is read)
REFUSED_MODEL_TYPES: dict[str, str] = {
    "phi3": (
        "Phi-3 fuses q/k/v into one qkv_proj and gate/up into one gate_up_proj, so a KV group's rows are three "
        "disjoint blocks of one parameter that the per-role gradient hooks and importance estimators "
        "(separate q, k, v, gate, up weights) cannot see apart; and Phi3Attention splits qkv at the "
        "model-wide config.num_attention_heads * head_dim, which removing KV groups in some layers breaks"
    ),
    **{
        t: (
            "mixture-of-experts layers hold a router and every expert's MLP in fused 3-d parameters "
            "(experts.gate_up_proj [experts, 2*intermediate, hidden], experts.down_proj), not one gate/up/down_proj "
            "per layer, so MLP channel groups are not defined for them"
        )
        for t in ("mixtral", "qwen2_moe", "qwen3_moe")
    },
    "gemma3": (
        "this is the multimodal Gemma3ForConditionalGeneration (vision tower and projector); prune the "
        "text-only Gemma3ForCausalLM (model_type gemma3_text) instead"
    ),
}


def _model_type(model_or_config: Any) -> str | None:
    config = getattr(model_or_config, "config", model_or_config)
    if isinstance(config, dict):
        return config.get("model_type")
    return getattr(config, "model_type", None)


def get_adapter(model_or_config: Any) -> ArchitectureAdapter:
    """The adapter for a model, a config or a config dict, chosen by ``model_type``."""
    model_type = _model_type(model_or_config)
    try:
        return _ADAPTERS[model_type]  # type: ignore[index]
    except KeyError:
        why = REFUSED_MODEL_TYPES.get(model_type)  # type: ignore[arg-type]
        raise ModelError(
            f"model_type {model_type!r} is not supported for structured pruning"
            + (f": {why}" if why else "")
            + f"; supported: {', '.join(SUPPORTED_MODEL_TYPES)}"
        ) from None
