"""The sizes a memory plan needs, read from a model's config alone (no weight is ever read).

The model is built on the meta device (no memory, about a second for a 70B config) and described with
the same architecture adapter the run uses: parameter counts, the prunable weights, and the widths
that set the size of the activations (hidden, attention, MLP, vocabulary).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

#: norm modules of a decoder layer whose fp32 upcast autograd keeps: the per-head q/k norms normalize the
#: attention's query / key heads, every other one the hidden state
_HEAD_NORMS = {"q_norm": "q", "k_norm": "k"}


@dataclass(frozen=True)
class ModelShape:
    """What the memory of a run depends on, for one model (every count in elements, not bytes)."""

    model_type: str
    params: int  # every parameter, tied embeddings once
    prunable: int  # the prunable weights and biases (q/k/v/o/gate/up/down) of every decoder layer
    largest_weight: int  # the largest prunable weight (one gradient of this size exists at a time)
    largest_layer: int  # the parameters of the largest decoder layer (FSDP's unit of all-gather)
    n_layers: int
    hidden: int
    q_width: int  # query heads × head_dim
    kv_width: int  # KV heads × head_dim
    n_heads: int
    intermediate: int  # the widest MLP
    vocab: int
    norm_widths: tuple[int, ...]  # per decoder layer: the width each norm normalizes (fp32 copies)
    max_positions: int | None

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (run.json's memory section)."""
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.__dict__.items()}


_CACHE: dict[str, ModelShape] = {}


def model_shape(config: Any) -> ModelShape:
    """The :class:`ModelShape` of the model ``config`` describes (memoized per config)."""
    key = config.to_json_string(use_diff=False) if hasattr(config, "to_json_string") else json.dumps(config)
    if key not in _CACHE:
        _CACHE[key] = _measure(config)
    return _CACHE[key]


def _measure(config: Any) -> ModelShape:
    import torch
    from transformers import AutoModelForCausalLM

    from gradprune.models.adapters import get_adapter

    adapter = get_adapter(config)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    layers = adapter.layers(model)
    decoder = adapter.decoder_layers(model)
    first = layers[0]
    norms = []
    for name, module in decoder[0].named_modules():
        weight = getattr(module, "weight", None)
        if "norm" not in type(module).__name__.lower() or weight is None:
            continue
        head = _HEAD_NORMS.get(name.rsplit(".", 1)[-1])
        norms.append(first.q.out_features if head == "q" else first.k.out_features if head == "k" else first.hidden_size)
    weights = [p for lm in layers for p in lm.weights().values()]
    vocab = model.get_output_embeddings().weight.shape[0]
    return ModelShape(
        model_type=config.model_type,
        params=adapter.count_params(model),
        prunable=sum(p.numel() for p in weights),
        largest_weight=max(p.numel() for p in weights),
        largest_layer=max(sum(p.numel() for p in layer.parameters()) for layer in decoder),
        n_layers=len(layers),
        hidden=first.hidden_size,
        q_width=first.q.out_features,
        kv_width=first.k.out_features,
        n_heads=first.q.out_features // first.head_dim,
        intermediate=max(lm.gate.out_features for lm in layers),
        vocab=int(vocab),
        norm_widths=tuple(norms),
        max_positions=getattr(config, "max_position_embeddings", None),
    )
