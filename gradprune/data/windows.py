"""Seeded draws of calibration windows: ``num_samples`` windows of ``seq_len`` tokens.

Documents are visited in a seeded order and tokenized into one stream (joined by the EOS token)
until it holds enough tokens; the stream is cut into non-overlapping slots of ``seq_len`` tokens,
and ``num_samples`` slots are drawn without replacement. The draw is fully determined by the seed
and recorded (slot indices and a SHA-256 of the token ids).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np
import torch

from gradprune.errors import DataError

# how many times the requested tokens to read before drawing, so draws are not the stream's prefix
_OVERSAMPLE = 4


@dataclass
class Windows:
    """Calibration windows [num_samples, seq_len] and how they were drawn."""

    input_ids: torch.Tensor
    provenance: dict = field(default_factory=dict)


def draw_windows(source, tokenizer, seq_len: int, num_samples: int, seed: int) -> Windows:
    """Draw the windows; too little text for the request is a DataError naming the numbers."""
    docs = list(source.documents())
    if not docs:
        raise DataError(f"calibration data ({source.describe()}) holds no text")
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(docs))
    need = seq_len * num_samples * _OVERSAMPLE
    eos = tokenizer.eos_token_id
    stream: list[int] = []
    used = 0
    for i in order:
        ids = tokenizer(docs[i], add_special_tokens=False)["input_ids"]
        stream.extend(ids)
        if eos is not None:
            stream.append(eos)
        used += 1
        if len(stream) >= need:
            break
    n_slots = len(stream) // seq_len
    if n_slots < num_samples:
        raise DataError(
            f"calibration: the text ({source.describe()}, {len(stream):,} tokens) holds only {n_slots} "
            f"windows of seq_len={seq_len}; num_samples={num_samples} asked. Lower calibration.num_samples "
            f"or calibration.seq_len, or use a larger data set."
        )
    slots = np.sort(rng.choice(n_slots, size=num_samples, replace=False))
    arr = np.asarray(stream[: n_slots * seq_len], dtype=np.int64).reshape(n_slots, seq_len)[slots]
    ids = torch.from_numpy(np.ascontiguousarray(arr))
    prov = {
        "source": source.describe(),
        "seed": seed,
        "seq_len": seq_len,
        "num_samples": num_samples,
        "documents_read": used,
        "stream_tokens": len(stream),
        "slots": slots.tolist(),
        "sha256": hashlib.sha256(arr.tobytes()).hexdigest(),
    }
    return Windows(ids, prov)
