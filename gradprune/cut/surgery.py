"""Structured surgery: apply a plan by slicing the Linear weights of each layer in place.

The Linear modules are kept (only their ``Parameter.data`` and ``in/out_features`` change) so that
no zero-size ``nn.Linear`` is ever constructed (that warns) and dtype, device, ``requires_grad`` and
any references to the parameters survive. ``head_dim`` and ``num_key_value_groups`` are unchanged:
whole KV groups are removed, and transformers 5 reshapes attention with ``-1`` heads.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from gradprune.errors import PlanError
from gradprune.models.adapters import (
    ROLES_ATTN,
    ROLES_MLP,
    UNGROUPED_ROLES,
    ArchitectureAdapter,
    LayerModules,
    get_adapter,
    group_view3,
)
from gradprune.pruning.plan import LayerPlan, Plan, check_kept


def check_block(kept: list[int] | None, n: int, what: str, layer: int) -> None:
    """``kept`` (the plan's ``attn_kept`` or ``mlp_kept`` of ``layer``) is valid for ``n`` groups."""
    where = f"plan layer {layer} {what}"
    check_kept(kept, where)
    if kept:
        unit = "KV groups" if what == "attn_kept" else "MLP channels"
        if kept[-1] >= n:
            raise PlanError(f"{where}: index {kept[-1]} out of range (the layer has {n} {unit})")


def validate_plan(model: nn.Module, plan: Plan) -> tuple[ArchitectureAdapter, list[LayerModules]]:
    """Check the plan against the model (type, layer count, index ranges, order) before any change."""
    adapter = get_adapter(model)
    model_type = model.config.model_type
    if plan.model_type != model_type:
        raise PlanError(f"plan is for model_type {plan.model_type!r}, the model is {model_type!r}")
    plan.check_unique_layers()
    layers = adapter.layers(model)
    for lp in plan.layers:
        if not 0 <= lp.layer < len(layers):
            raise PlanError(f"plan layer {lp.layer} out of range: the model has {len(layers)} layers")
        lm = layers[lp.layer]
        check_block(lp.attn_kept, lm.n_kv, "attn_kept", lp.layer)
        check_block(lp.mlp_kept, lm.n_channels, "mlp_kept", lp.layer)
    return adapter, layers


def _expand(kept: list[int], size: int, device: torch.device) -> Tensor:
    """Row/column indices of the kept groups, each group being ``size`` consecutive rows/columns."""
    groups = torch.tensor(kept, dtype=torch.long, device=device)
    return (groups[:, None] * size + torch.arange(size, device=device)).reshape(-1)


def _slice(param: nn.Parameter | None, dim: int, index: Tensor) -> None:
    """Keep ``index`` along ``dim`` of ``param`` in place (same Parameter object)."""
    if param is None:
        return
    # .data assignment keeps the Parameter (and its requires_grad) while changing its shape;
    # a gradient of the old shape would be wrong now.
    param.data = param.data.index_select(dim, index.to(param.device))
    param.grad = None


def _cut_rows(linear: nn.Linear, index: Tensor) -> None:
    _slice(linear.weight, 0, index)
    _slice(linear.bias, 0, index)
    linear.out_features = linear.weight.shape[0]


def _cut_columns(linear: nn.Linear, index: Tensor) -> None:
    _slice(linear.weight, 1, index)  # the bias lives on the output side: untouched
    linear.in_features = linear.weight.shape[1]


def _cut_layer(lm: LayerModules, lp: LayerPlan) -> None:
    device = lm.q.weight.device
    if lp.attn_kept is not None and len(lp.attn_kept) != lm.n_kv:
        width = lm.head_dim
        _cut_rows(lm.q, _expand(lp.attn_kept, lm.n_rep * width, device))
        kv_index = _expand(lp.attn_kept, width, device)
        _cut_rows(lm.k, kv_index)
        _cut_rows(lm.v, kv_index)
        _cut_columns(lm.o, _expand(lp.attn_kept, lm.n_rep * width, device))
    if lp.mlp_kept is not None and len(lp.mlp_kept) != lm.n_channels:
        index = _expand(lp.mlp_kept, 1, device)
        _cut_rows(lm.gate, index)
        _cut_rows(lm.up, index)
        _cut_columns(lm.down, index)
        if hasattr(lm.mlp, "intermediate_size"):
            lm.mlp.intermediate_size = lm.n_channels  # informational in transformers 5; keep it true


def apply_plan(model: nn.Module, plan: Plan) -> None:
    """Remove the groups the plan does not keep, in place; the whole plan is checked first."""
    _, layers = validate_plan(model, plan)
    with torch.no_grad():
        for lp in plan.layers:
            _cut_layer(layers[lp.layer], lp)


def _removed(kept: list[int] | None, n: int) -> list[int]:
    if kept is None:
        return []
    keep = set(kept)
    return [g for g in range(n) if g not in keep]


def mask_plan(model: nn.Module, plan: Plan) -> None:
    """Reference for tests: zero the removed groups' weights instead of cutting them."""
    _, layers = validate_plan(model, plan)
    with torch.no_grad():
        for lp in plan.layers:
            lm = layers[lp.layer]
            weights = lm.weights()
            blocks = ((lp.attn_kept, lm.n_kv, ROLES_ATTN), (lp.mlp_kept, lm.n_channels, ROLES_MLP))
            for kept, n, roles in blocks:
                removed = _removed(kept, n)
                for role in roles:
                    if removed and role in weights and role not in UNGROUPED_ROLES:
                        group_view3(weights[role].data, role, lm)[removed] = 0

