"""Turning a plan and calibration statistics into the per-layer table and the flat metrics."""

from __future__ import annotations

from gradprune.stats.summary import ratio_summary


def layer_rows(layers, plan, layer_stats: dict[str, list[float]], threshold: float) -> list[dict]:
    """One dict per layer: params before/after, groups kept, pruning rate, gradient statistics."""
    by_layer = {lp.layer: lp for lp in plan.layers}
    rows = []
    for lm in layers:
        lp = by_layer.get(lm.index)
        kv_kept = len(lp.attn_kept) if lp is not None and lp.attn_kept is not None else lm.n_kv
        ch_kept = len(lp.mlp_kept) if lp is not None and lp.mlp_kept is not None else lm.n_channels
        a, m = lm.attn_group_params(), lm.mlp_group_params()
        before = lm.n_kv * a + lm.n_channels * m
        removed = (lm.n_kv - kv_kept) * a + (lm.n_channels - ch_kept) * m
        other = _other_params(lm)
        rate = removed / before if before else 0.0
        row = {
            "layer": lm.index, "params_before": before + other, "params_after": before - removed + other,
            "prunable_before": before, "prunable_removed": removed, "pruning_rate": rate,
            "kv_groups_before": lm.n_kv, "kv_groups_kept": kv_kept,
            "heads_before": lm.n_kv * lm.n_rep, "heads_kept": kv_kept * lm.n_rep,
            "mlp_channels_before": lm.n_channels, "mlp_channels_kept": ch_kept,
            "attn_pruned": kv_kept < lm.n_kv, "mlp_pruned": ch_kept < lm.n_channels,
            "extreme": rate > threshold,
        }
        for name, values in layer_stats.items():
            row[name] = values[lm.index] if lm.index < len(values) else None
        rows.append(row)
    return rows


def _other_params(lm) -> int:
    """Attention/MLP parameters no group removes (o_proj / down_proj biases, if any)."""
    return sum(b.numel() for b in (lm.o.bias, lm.down.bias) if b is not None)


def run_metrics(recipe, params_before: int, params_after: int, calib, rows: list[dict], ev: dict,
                timings: dict) -> dict:
    """The flat metrics of run.json (the same names as the search CSV columns)."""
    m: dict = {
        "pruning_ratio": (params_before - params_after) / params_before,
        "target_ratio": recipe.pruning.ratio,
        "params_before": params_before,
        "params_after": params_after,
        "taylor_seq_len": recipe.calibration.seq_len,
        "taylor_num_samples": recipe.calibration.num_samples,
        "calibration_seed": recipe.calibration.seed,
        "extreme_pruning_layers": sum(1 for r in rows if r["extreme"]),
        "max_layer_pruning_rate": max((r["pruning_rate"] for r in rows), default=0.0),
        "calibration_loss": calib.mean_loss,
        # the statistics are split-independent; the noise ones are exact only with micro-batches of one
        "calibration_micro_batch": calib.info.get("micro_batch_size"),
        "grad_noise_exact": calib.info.get("micro_batch_size") == 1,
        "tokens_per_s": calib.tokens_per_s,
    }
    for name, values in calib.layer_stats.items():
        m.update(ratio_summary(name, values))
    m.update(ev)
    m.update({k: round(v, 4) for k, v in timings.items()})
    return m
