"""Planners: turn normalized per-group scores into a Plan that removes a target parameter ratio.

The target ``pruning.ratio`` is a fraction of the whole model's parameters (embeddings included).
Each group is weighed by the parameters it removes (a KV group removes far more than one channel).
Each (layer, kind) in the allowed layer ranges is a *pool*: its groups go lowest score first, and
its ``min_keep`` best groups never go.

* global: one ranking over every pool's groups; groups are removed from the lowest score up until
  the removed parameters land closest to the target: within half of the largest group.
* local: every allowed layer loses the same number of KV groups and the same number of MLP
  channels (for pools of different sizes: the same share of each, rounded to whole groups), so a
  local plan over all layers saves as a plain Hugging Face checkpoint. The KV count is the target
  share rounded to the nearest whole group; the MLP count then makes up what that rounding left, so
  the total lands within half a channel per layer of the target (less than one KV group on every
  supported shape). Where MLP cannot make it up (``prune_mlp: false``, narrow ``mlp_layers``) the
  next KV count that can is taken; a target local cannot reach within one group is warned about,
  naming the nearest ratios it can reach.

``round_to`` = N keeps every pruned MLP width a multiple of N: a pool's channels then go in steps
(first the channels above the largest multiple of N below the width, then N at a time), and a step
stands in the global ranking with the score of its best channel. Steps larger than a group, or a
target above what the rounded steps can remove (which preflight refuses before calibration), miss
the target by more than a group.

A plan off its target by more than its tolerance (the largest group of the allowed pools; for local,
at least one MLP channel per allowed layer, its finest step), or one that leaves a layer with no KV
group or no MLP channel (possible with ``min_keep: 0``), is reported by a :class:`PlanWarning` and in
``plan.meta``: ``achieved_ratio``, ``removed_params``, ``tolerance_params``, ``emptied_layers``
(``{"attn": [...], "mlp": [...]}``) and ``warnings`` (the messages).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from gradprune.errors import PlanError
from gradprune.importance.base import Scores
from gradprune.importance.normalizers import layer_list
from gradprune.models.adapters import LayerModules
from gradprune.pruning.plan import LayerPlan, Plan


class PlanWarning(UserWarning):
    """The plan misses its target by more than one group, or leaves a layer without a block."""


@dataclass
class Pool:
    """The removable groups of one (layer, kind) in the order they go, and where a cut may stop."""

    layer: int
    kind: str
    n_groups: int  # every group of the (layer, kind), the min_keep protected ones included
    order: np.ndarray  # the removable group indices, lowest score first (ties: lower index first)
    scores: np.ndarray  # their scores, ascending
    cost: int  # parameters one group removes
    stops: np.ndarray  # the group counts a cut may remove (ascending, > 0): all, or round_to's steps

    @property
    def removable(self) -> int:
        """Parameters removed when the pool loses all it may."""
        return int(self.stops[-1]) * self.cost if len(self.stops) else 0

    def step_costs(self) -> np.ndarray:
        """Parameters each step (from one stop to the next) removes."""
        return np.diff(self.stops, prepend=0) * self.cost

    def step_scores(self) -> np.ndarray:
        """Score of each step: its best group's, so a step goes only once all its groups would."""
        return self.scores[self.stops - 1]


def allowed_layers(n_layers: int, rng: tuple[int, int | None] | None, key: str) -> range:
    """The [start, end) layer range of a kind (end None: ``n_layers``; negative: ``n_layers + end``); a
    range beyond the model, or empty on it, is a PlanError."""
    if rng is None:
        return range(n_layers)
    start, end = rng
    stop = n_layers if end is None else n_layers + end if end < 0 else end
    if stop > n_layers or not 0 <= start < stop:
        shown = "null" if end is None else end
        raise PlanError(f"pruning.{key}: [{start}, {shown}) is outside the model, which has {n_layers} layers "
                        f"(expected 0 <= start < end <= {n_layers}; end null = up to the last layer)")
    return range(start, stop)


def _stops(n: int, n_free: int, min_keep: int, round_to: int, kind: str) -> np.ndarray:
    """Group counts a pool may lose: any up to ``n_free``, or for MLP with round_to > 1 the counts
    that leave a multiple of ``round_to`` channels (and at least ``min_keep``)."""
    if kind == "attn" or round_to == 1:
        return np.arange(1, n_free + 1)
    fewest_kept = -(-min_keep // round_to) * round_to  # the smallest multiple of round_to >= min_keep
    kept = np.arange((n - 1) // round_to * round_to, fewest_kept - 1, -round_to)
    return n - kept


def _pools(scores: Scores, layers: dict[int, LayerModules], pruning) -> list[Pool]:
    """One pool per enabled kind and allowed layer, attention pools first (the global tie-break order)."""
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
            # best first (ties: lower index wins, stable); the min_keep best are protected
            best_first = np.lexsort((np.arange(len(s)), -s))
            free = best_first[pruning.min_keep:]
            order = free[np.lexsort((free, s[free]))]  # lowest score first, ties: lower index first
            stops = _stops(len(s), len(order), pruning.min_keep, pruning.round_to, kind)
            out.append(Pool(li, kind, len(s), order, s[order], cost, stops))
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


def _global_counts(pools: list[Pool], target: float) -> list[int]:
    """Groups each pool loses: one ranking of every pool's steps, cut closest to ``target``."""
    cost = np.concatenate([p.step_costs() for p in pools] + [np.zeros(0, dtype=np.int64)])
    s = np.concatenate([p.step_scores() for p in pools] + [np.zeros(0)])
    pid = np.concatenate([np.full(len(p.stops), i) for i, p in enumerate(pools)] + [np.zeros(0, dtype=int)])
    pos = np.concatenate([np.arange(len(p.stops)) for p in pools] + [np.zeros(0, dtype=int)])
    # by score, then pool, then step: deterministic, and a pool's steps (scores ascending) go in order
    order = np.lexsort((pos, pid, s))
    k = _cut(cost[order], target)
    taken = np.bincount(pid[order[:k]].astype(np.int64), minlength=len(pools))
    return [int(p.stops[t - 1]) if t else 0 for p, t in zip(pools, taken, strict=True)]


def _levels(pool: Pool) -> tuple[np.ndarray, np.ndarray]:
    """The pool's removal counts (0 first, ascending) and the shares of its removable groups at which
    the nearest count steps up to the next (midpoints)."""
    counts = np.concatenate([[0], pool.stops]).astype(np.int64)
    if counts[-1] == 0:
        return counts, np.zeros(0)
    return counts, (counts[1:] + counts[:-1]) / 2 / counts[-1]


def _count_at(pool: Pool, share: float) -> int:
    """The pool's removal count nearest to ``share`` of its removable groups."""
    counts, mids = _levels(pool)
    return int(counts[np.searchsorted(mids, share, side="right")])


def _kind_levels(pools: list[Pool]) -> tuple[np.ndarray, np.ndarray]:
    """Every share at which a kind's same-share cut changes (0 first), and the parameters it removes."""
    if not pools:
        return np.zeros(1), np.zeros(1, dtype=np.int64)
    shares = np.unique(np.concatenate([np.zeros(1)] + [_levels(p)[1] for p in pools]))
    removed = np.zeros(len(shares), dtype=np.int64)
    for p in pools:
        counts, mids = _levels(p)
        removed += counts[np.searchsorted(mids, shares, side="right")] * p.cost
    return shares, removed


def _local_counts(pools: list[Pool], target: float, tolerance: int) -> tuple[list[int], tuple | None]:
    """Groups each pool loses under the local scope, and (when the target is missed by more than the
    tolerance) the nearest totals below and above it that local can reach."""
    attn = [p for p in pools if p.kind == "attn"]
    mlp = [p for p in pools if p.kind == "mlp"]
    a_shares, a_removed = _kind_levels(attn)
    m_shares, m_removed = _kind_levels(mlp)
    # the KV share closest to the whole plan's share first, then the others: the first one whose
    # best MLP count lands within half the tolerance wins (MLP steps are small: nearly always the first)
    removable = sum(p.removable for p in pools)  # 0 where round_to leaves nothing to remove
    share = min(1.0, target / removable) if removable else 0.0
    ideal_attn = share * sum(p.removable for p in attn)
    best = None
    for i in np.argsort(np.abs(a_removed - ideal_attn), kind="stable"):
        j = int(np.argmin(np.abs(m_removed - (target - a_removed[i]))))
        miss = abs(int(a_removed[i] + m_removed[j]) - target)
        if best is None or miss < best[0]:
            best = (miss, int(i), j)
        if miss <= tolerance / 2:
            break
    miss, i, j = best
    at = {"attn": a_shares[i], "mlp": m_shares[j]}
    counts = [_count_at(p, at[p.kind]) for p in pools]
    near = None
    if miss > tolerance:
        totals = (a_removed[:, None] + m_removed[None, :]).ravel()
        below, above = totals[totals <= target], totals[totals >= target]
        near = (int(below.max()) if len(below) else None, int(above.min()) if len(above) else None)
    return counts, near


def plan_pruning(scores: Scores, layers: list[LayerModules], total_params: int, pruning, model_type: str) -> Plan:
    """Make the plan for ``pruning`` (a recipe PruningSection) from normalized scores."""
    by_index = {lm.index: lm for lm in layers}
    pools = _pools(scores, by_index, pruning)
    target = pruning.ratio * total_params
    # compared before rounding, as preflight's reach() does: beyond this no plan can get close
    removable = sum(p.cost * len(p.order) for p in pools)
    if removable < target:
        raise PlanError(
            f"pruning.ratio={pruning.ratio} asks to remove {target:,.0f} of {total_params:,} parameters, but only "
            f"{removable:,} are removable in the allowed layer ranges (after min_keep={pruning.min_keep}); "
            f"lower the ratio or widen attention_layers / mlp_layers")
    tolerance = _tolerance(pools, pruning.scope)
    if pruning.scope == "global":
        counts, near = _global_counts(pools, target), None
    else:
        counts, near = _local_counts(pools, target, tolerance)
    meta = _outcome(pools, counts, total_params, pruning, tolerance, near)
    drop = {(p.layer, p.kind): {int(i) for i in p.order[:c]} for p, c in zip(pools, counts, strict=True) if c}
    return _to_plan(drop, by_index, model_type, pruning, meta)


def _tolerance(pools: list[Pool], scope: str) -> int:
    """How far off the target a plan may land: one group (the largest), and for local no less than one
    MLP channel per allowed layer, the finest step a cut of the same count from every layer has."""
    group = max(p.cost for p in pools)
    if scope == "local":
        group = max(group, sum(p.cost for p in pools if p.kind == "mlp"))
    return group


def _outcome(pools: list[Pool], counts: list[int], total_params: int, pruning, tolerance: int,
             near: tuple | None) -> dict:
    """The plan's meta on what was achieved; warns (and lists) a missed target and emptied layers."""
    target = pruning.ratio * total_params
    removed = sum(c * p.cost for p, c in zip(pools, counts, strict=True))
    emptied: dict[str, list[int]] = {"attn": [], "mlp": []}
    for p, c in zip(pools, counts, strict=True):
        if c and c == p.n_groups:
            emptied[p.kind].append(p.layer)
    found = []
    if abs(removed - target) > tolerance:
        found.append(_missed_message(pools, removed, target, total_params, tolerance, pruning, near))
    for kind, what in (("attn", "every KV group (no attention left)"), ("mlp", "every MLP channel")):
        if emptied[kind]:
            verb = "loses" if len(emptied[kind]) == 1 else "lose"
            found.append(f"pruning.min_keep={pruning.min_keep}: {layer_list(emptied[kind])} {verb} {what}; "
                         f"set pruning.min_keep >= 1 to keep at least one")
    for message in found:
        warnings.warn(message, PlanWarning, stacklevel=3)
    return {"achieved_ratio": removed / total_params, "removed_params": removed, "tolerance_params": tolerance,
            "emptied_layers": emptied, "warnings": found}


def _missed_message(pools: list[Pool], removed: int, target: float, total: int, tolerance: int, pruning,
                    near: tuple | None) -> str:
    """Why the plan is off its target by more than the tolerance, and what would land closer."""
    head = (f"pruning.ratio={pruning.ratio}: the plan removes {removed:,} parameters ({removed / total:.4f}), "
            f"{abs(removed - target):,.0f} off the target, more than its tolerance of {tolerance:,}")
    reach = sum(p.removable for p in pools)
    if reach < target:
        return (f"{head}: with pruning.round_to={pruning.round_to} at most {reach:,} parameters "
                f"({reach / total:.4f}) are removable, which the plan removes; use pruning.ratio <= "
                f"{np.floor(reach / total * 10_000) / 10_000:g} or a smaller round_to")
    if near is not None:
        ratios = " and ".join(f"{n / total:.4f}" for n in near if n is not None)
        return (f"{head}: pruning.scope=local cuts the same number of KV groups and MLP channels from every "
                f"allowed layer, so the nearest ratios it can reach here are {ratios}; use one of them, "
                f"widen pruning.mlp_layers / enable prune_mlp, or use pruning.scope=global")
    step = max((int(c) for p in pools for c in p.step_costs()), default=0)
    return (f"{head}: pruning.round_to={pruning.round_to} removes MLP channels in steps of up to {step:,} "
            f"parameters; a smaller round_to lands closer")


def _to_plan(drop, layers: dict[int, LayerModules], model_type: str, pruning, outcome: dict) -> Plan:
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
            "round_to": pruning.round_to, **outcome}
    return Plan(model_type=model_type, layers=out, meta=meta)


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

