"""Planners: turn normalized per-group scores into a Plan that removes an exact parameter ratio.

The target ``pruning.ratio`` is a fraction of the whole model's parameters (embeddings included).
Each group is weighed by the parameters it removes (a KV group removes far more than one channel).

* global: one ranking over every group in the allowed layer ranges; groups are removed from the
  lowest score up until the removed parameters reach the target (the last group is taken only if
  that lands closer to the target), so the achieved ratio is within half a group of the target.
* local: every allowed layer loses the same fraction of its prunable parameters.

``min_keep`` groups per layer and kind are never removed; ``round_to`` keeps MLP widths a
multiple of N (by keeping the best-scored removed channels back, so the ratio may fall short).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from gradprune.errors import PlanError
from gradprune.importance.base import Scores
from gradprune.models.adapters import LayerModules
from gradprune.pruning.plan import LayerPlan, Plan


@dataclass
class Pool:
    """The removable groups of one (layer, kind): scores, indices and the params one group removes."""

    layer: int
    kind: str
    scores: np.ndarray
    index: np.ndarray
    cost: int


def allowed_layers(n_layers: int, rng: tuple[int, int] | None, key: str) -> range:
    """The [start, end) layer range of a kind; a range beyond the model is a PlanError."""
    if rng is None:
        return range(n_layers)
    start, end = rng
    if end > n_layers:
        raise PlanError(f"pruning.{key}: [{start}, {end}) is outside the model, which has {n_layers} layers "
                        f"(expected 0 <= start < end <= {n_layers})")
    return range(start, end)


def _pools(scores: Scores, layers: dict[int, LayerModules], pruning) -> list[Pool]:
    n = max(layers) + 1
    out: list[Pool] = []
    kinds = [("attn", pruning.prune_attention, pruning.attention_layers, "attention_layers"),
             ("mlp", pruning.prune_mlp, pruning.mlp_layers, "mlp_layers")]
    for kind, enabled, rng, key in kinds:
        if not enabled:
            continue
        for li in allowed_layers(n, rng, key):
            lm = layers[li]
            cost = lm.attn_group_params() if kind == "attn" else lm.mlp_group_params()
            s = scores[(li, kind)].double().numpy()
            # the min_keep best groups are protected (ties: lower index wins, stable)
            order = np.lexsort((np.arange(len(s)), -s))
            free = np.sort(order[pruning.min_keep:])
            out.append(Pool(li, kind, s[free], free, cost))
    return out


def _cut(costs: np.ndarray, target: float) -> int:
    """How many of the ordered groups to remove so the removed params land closest to ``target``."""
    if target <= 0 or len(costs) == 0:
        return 0
    cum = np.cumsum(costs)
    k = int(np.searchsorted(cum, target))  # cum[k] >= target
    if k >= len(cum):
        return len(cum)
    before = cum[k - 1] if k > 0 else 0
    return k + 1 if (cum[k] - target) <= (target - before) else k


def plan_pruning(scores: Scores, layers: list[LayerModules], total_params: int, pruning, model_type: str) -> Plan:
    """Make the plan for ``pruning`` (a recipe PruningSection) from normalized scores."""
    by_index = {lm.index: lm for lm in layers}
    pools = _pools(scores, by_index, pruning)
    target = pruning.ratio * total_params
    removable = sum(p.cost * len(p.index) for p in pools)
    if removable < target:
        raise PlanError(
            f"pruning.ratio={pruning.ratio} asks to remove {target:,.0f} of {total_params:,} parameters, but only "
            f"{removable:,} are removable in the allowed layer ranges (after min_keep={pruning.min_keep}); "
            f"lower the ratio or widen attention_layers / mlp_layers")
    drop: dict[tuple[int, str], set[int]] = {}
    if pruning.scope == "global":
        s = np.concatenate([p.scores for p in pools])
        pid = np.concatenate([np.full(len(p.index), i) for i, p in enumerate(pools)])
        idx = np.concatenate([p.index for p in pools])
        cost = np.concatenate([np.full(len(p.index), p.cost, dtype=np.int64) for p in pools])
        order = np.lexsort((idx, pid, s))  # by score, then pool, then index: deterministic
        k = _cut(cost[order], target)
        for j in order[:k]:
            p = pools[pid[j]]
            drop.setdefault((p.layer, p.kind), set()).add(int(idx[j]))
    else:
        frac = target / removable
        for p in pools:
            order = np.lexsort((p.index, p.scores))
            k = _cut(np.full(len(order), p.cost), frac * p.cost * len(p.index))
            drop[(p.layer, p.kind)] = {int(i) for i in p.index[order[:k]]}
    if pruning.round_to > 1:
        _round_mlp(drop, scores, by_index, pruning.round_to)
    return _to_plan(drop, by_index, model_type, pruning)


def _round_mlp(drop: dict[tuple[int, str], set[int]], scores: Scores, layers: dict[int, LayerModules], n: int) -> None:
    """Keep back the best removed channels until each MLP width is a multiple of n."""
    for (li, kind), idx in drop.items():
        if kind != "mlp":
            continue
        kept = layers[li].n_channels - len(idx)
        extra = (-kept) % n
        if extra:
            back = sorted(idx, key=lambda i: -float(scores[(li, kind)][i]))[:extra]
            idx.difference_update(back)


def _to_plan(drop, layers: dict[int, LayerModules], model_type: str, pruning) -> Plan:
    out = []
    for li in sorted(layers):
        lm = layers[li]
        a = drop.get((li, "attn"))
        m = drop.get((li, "mlp"))
        out.append(LayerPlan(
            layer=li,
            attn_kept=[i for i in range(lm.n_kv) if i not in a] if a else None,
            mlp_kept=[i for i in range(lm.n_channels) if i not in m] if m else None,
        ))
    meta = {"target_ratio": pruning.ratio, "scope": pruning.scope, "min_keep": pruning.min_keep,
            "round_to": pruning.round_to}
    return Plan(model_type=model_type, layers=out, meta=meta)


def normalize_scores(scores: Scores, normalizer) -> Scores:
    """Apply a per-layer normalizer to each (layer, kind) score vector."""
    return {k: normalizer(v.float()) for k, v in scores.items()}


def removed_params(plan: Plan, layers: list[LayerModules]) -> dict[int, dict[str, int]]:
    """Per layer: prunable params before, and params removed by the plan (attention + MLP)."""
    by_index = {lm.index: lm for lm in layers}
    out = {}
    for lp in plan.layers:
        lm = by_index[lp.layer]
        before = lm.n_kv * lm.attn_group_params() + lm.n_channels * lm.mlp_group_params()
        rem = 0
        if lp.attn_kept is not None:
            rem += (lm.n_kv - len(lp.attn_kept)) * lm.attn_group_params()
        if lp.mlp_kept is not None:
            rem += (lm.n_channels - len(lp.mlp_kept)) * lm.mlp_group_params()
        out[lp.layer] = {"prunable_before": before, "removed": rem}
    return out


def score_tensor(scores: Scores) -> torch.Tensor:
    """All scores concatenated in (layer, kind) order (for rank correlations across replicates)."""
    return torch.cat([scores[k].flatten().float() for k in sorted(scores)])
