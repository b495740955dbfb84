"""Check a calibration plugin (estimator or collector) against the protocol of :mod:`gradprune.calibration_plugin`.

``check_plugin`` runs the plugin through tiny calibrations on one CPU process (a small Mistral built from
a config, random weights, no download) and fails with an ``AssertionError`` naming what is wrong:
``state()`` is tensors with a declared reduction (a ``rows`` one indexed by rows), the result is finite
and well formed, two runs give the same result, and, for a plugin whose result is a mean over samples
(``reads`` only G, or ``linear``), two micro-batches and one per sample give the same result.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from gradprune.calibration_plugin import REDUCTIONS, CalibrationPlugin

#: the tiny model's shape (GQA: 8 query heads, 2 KV heads)
TINY = dict(vocab_size=128, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=8,
            num_key_value_heads=2, max_position_embeddings=64, tie_word_embeddings=True)


def tiny_model(seed: int = 0) -> torch.nn.Module:
    """A tiny randomly initialised Mistral (from a config, nothing downloaded)."""
    import transformers as tf

    torch.manual_seed(seed)
    return tf.MistralForCausalLM(tf.MistralConfig(**TINY)).eval()


def check_plugin(plugin: type[CalibrationPlugin] | CalibrationPlugin, n_samples: int = 4, seq_len: int = 8,
                 split_invariant: bool | None = None, rtol: float = 1e-5) -> dict[str, Any]:
    """Run ``plugin`` (a class, built with its default params, or an instance) through tiny calibrations and
    check the protocol; returns the result of the run in two micro-batches (scores or per-layer values, and
    the accumulators as ``state:<name>``).

    ``split_invariant``: whether two micro-batches of ``n_samples / 2`` and ``n_samples`` micro-batches of one
    must agree (default: when the plugin reads only the mean gradient, or is ``linear``).
    """
    proto = plugin() if isinstance(plugin, type) else plugin
    if not isinstance(proto, CalibrationPlugin):
        raise AssertionError(f"{type(proto).__name__} is not a CalibrationPlugin")
    if split_invariant is None:
        split_invariant = not proto.per_sample and not proto.input_roles and (
            set(proto.reads) <= {"mean_gradient"} or (proto.linear and set(proto.reads) <= {"gradients"}))
    halves = max(1, n_samples // 2)  # two micro-batches: statistics across micro-batches are defined
    whole = _run(plugin, n_samples, halves, seq_len)
    again = _run(plugin, n_samples, halves, seq_len)
    _same(whole, again, 0.0, "two identical calibrations")
    if split_invariant:
        _same(whole, _run(plugin, n_samples, 1, seq_len), rtol, "two micro-batches vs one per sample")
    return whole


def _run(plugin: type[CalibrationPlugin] | CalibrationPlugin, n_samples: int, batch_size: int,
         seq_len: int) -> dict[str, Any]:
    from gradprune.calibration import calibrate
    from gradprune.importance.base import ImportanceEstimator
    from gradprune.models.adapters import get_adapter
    from gradprune.recipe import TrainerSection

    p = plugin() if isinstance(plugin, type) else plugin
    p.name = p.name or type(p).__name__.lower()
    model = tiny_model()
    layers = get_adapter(model).layers(model)
    ids = torch.randint(0, TINY["vocab_size"], (n_samples, seq_len), generator=torch.Generator().manual_seed(0))
    seen: dict[str, tuple[torch.Tensor, str]] = {}
    release = p.release

    def keep_state() -> None:  # the accumulators as calibration leaves them, before they are dropped
        seen.update({k: (t.clone(), op) for k, (t, op) in _state(p).items()})
        release()

    p.release = keep_state
    try:
        estimator = isinstance(p, ImportanceEstimator)
        res = calibrate(model, layers, ids, batch_size, {p.name: p} if estimator else {}, [] if estimator else [p],
                        TrainerSection(accelerator="cpu", devices=1, precision="32-true"))
    finally:
        del p.release
    if estimator:
        out = _checked_scores(p.name, res.scores[p.name], {lm.index for lm in layers})
    else:
        out = {"per_layer": _checked_values(p.name, res.layer_stats[p.name], max(lm.index for lm in layers) + 1)}
    return {**out, **{f"state:{k}": t for k, (t, _) in seen.items()}}


def _state(p: CalibrationPlugin) -> dict[str, tuple[torch.Tensor, str]]:
    state = p.state()
    if not isinstance(state, dict):
        raise AssertionError(f"{p.name}: state() returned {type(state).__name__}, expected a dict")
    for name, entry in state.items():
        if not (isinstance(entry, tuple) and len(entry) == 2 and isinstance(entry[0], torch.Tensor)):
            raise AssertionError(f"{p.name}: state()[{name!r}] is not a (tensor, reduction) pair")
        if entry[1] not in REDUCTIONS:
            raise AssertionError(f"{p.name}: state()[{name!r}] reduction {entry[1]!r}; expected one of {REDUCTIONS}")
        if entry[1] == "rows" and entry[0].dim() == 0:
            raise AssertionError(f"{p.name}: state()[{name!r}] is a 0-d tensor with reduction rows")
        if entry[0].is_floating_point() and not bool(torch.isfinite(entry[0]).all()):
            raise AssertionError(f"{p.name}: state()[{name!r}] holds non-finite values")
    return state


def _checked_scores(name: str, scores: Any, indices: set[int]) -> dict[str, torch.Tensor]:
    if not isinstance(scores, dict) or not scores:
        raise AssertionError(f"{name}: scores() returned no scores")
    out = {}
    for key, s in scores.items():
        if not (isinstance(key, tuple) and len(key) == 2 and key[0] in indices and key[1] in ("attn", "mlp")):
            raise AssertionError(f"{name}: score key {key!r}; expected (layer index, 'attn' | 'mlp')")
        if not (isinstance(s, torch.Tensor) and s.dtype == torch.float32 and s.device.type == "cpu" and s.dim() == 1):
            raise AssertionError(f"{name}: scores[{key}] must be a 1-d fp32 CPU tensor")
        if not bool(torch.isfinite(s).all()):
            raise AssertionError(f"{name}: scores[{key}] holds non-finite values")
        out[f"score:{key[0]}.{key[1]}"] = s
    return out


def _checked_values(name: str, values: Any, n_layers: int) -> list[float]:
    if not isinstance(values, list) or len(values) < n_layers:
        raise AssertionError(f"{name}: per_layer() must be a list of at least {n_layers} values")
    if not all(isinstance(v, float) and math.isfinite(v) for v in values):
        raise AssertionError(f"{name}: per_layer() holds a non-float or non-finite value: {values}")
    return values


def _same(a: dict[str, Any], b: dict[str, Any], rtol: float, what: str) -> None:
    """The results (and, for identical runs, the states) of two calibrations agree."""
    keys = set(a) if rtol == 0 else {k for k in a if not k.startswith("state:")}
    if rtol == 0 and set(a) != set(b):
        raise AssertionError(f"{what}: different accumulators {sorted(set(a) ^ set(b))}")
    for k in sorted(keys):
        x, y = torch.as_tensor(a[k], dtype=torch.float64), torch.as_tensor(b[k], dtype=torch.float64)
        if x.shape != y.shape or not torch.allclose(x, y, rtol=rtol, atol=rtol * float(x.abs().max()) if x.numel() else 0.0):
            raise AssertionError(f"{what}: {k} differs")
