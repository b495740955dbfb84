"""How reproducible a setting's plan is across calibration seeds (replicates of one grid point).

* ``kept_jaccard_mean``: mean over replicate pairs of |A ∩ B| / |A ∪ B| of the kept groups
  (layer, kind, index); ``removed_jaccard_mean`` the same for the removed groups, which is the
  more sensitive number at small ratios (most groups are kept by every replicate).
* ``score_rank_corr_mean``: mean over pairs of the Spearman correlation of all raw group scores.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np


def _groups(plan_path: Path, scores: dict) -> tuple[set, set]:
    from gradprune.pruning.plan import Plan

    plan = Plan.load(plan_path)
    kept, removed = set(), set()
    for lp in plan.layers:
        for kind, sel in (("attn", lp.attn_kept), ("mlp", lp.mlp_kept)):
            n = int(scores[f"{lp.layer}.{kind}"].numel()) if f"{lp.layer}.{kind}" in scores else 0
            keep = set(range(n)) if sel is None else set(sel)
            kept |= {(lp.layer, kind, i) for i in keep}
            removed |= {(lp.layer, kind, i) for i in set(range(n)) - keep}
    return kept, removed


def _jaccard(a: set, b: set) -> float:
    return len(a & b) / len(a | b) if (a | b) else 1.0


def replicate_stability(trial_dirs: list[Path]) -> dict[str, float]:
    """Stability columns for one grid point from its replicates' plan.json and scores.safetensors."""
    from safetensors.torch import load_file
    from scipy.stats import spearmanr

    loaded = []
    for d in trial_dirs:
        if (d / "plan.json").exists() and (d / "scores.safetensors").exists():
            sc = load_file(str(d / "scores.safetensors"))
            vec = np.concatenate([sc[k].double().numpy().ravel() for k in sorted(sc)])
            loaded.append((*_groups(d / "plan.json", sc), vec))
    if len(loaded) < 2:
        return {}
    kj, rj, rc = [], [], []
    for (ka, ra, va), (kb, rb, vb) in itertools.combinations(loaded, 2):
        kj.append(_jaccard(ka, kb))
        rj.append(_jaccard(ra, rb))
        if len(va) == len(vb) and np.std(va) > 0 and np.std(vb) > 0:
            rc.append(float(spearmanr(va, vb).statistic))
    out = {"kept_jaccard_mean": float(np.mean(kj)), "removed_jaccard_mean": float(np.mean(rj)),
           "replicates_n": len(loaded)}
    out["score_rank_corr_mean"] = float(np.mean(rc)) if rc else None
    return out
