"""Seeded draws of calibration windows: ``num_samples`` windows of ``seq_len`` tokens.

Documents are tokenized only until they hold ``_OVERSAMPLE`` times the requested tokens, so a data
set is read no further than the draw needs. A source with random access (local files, the embedded
corpus, a prepared ``datasets`` set) is visited in a seeded order over *all* its documents, so seeds
draw from different documents; a stream (``streaming: true``) is read in its own order and its first
documents are shuffled by the seed. The documents read are joined into one stream (by the EOS token),
cut into non-overlapping slots of ``seq_len`` tokens, and ``num_samples`` slots are drawn without
replacement. The draw is fully determined by the source and the seed, and recorded (documents read,
slot indices and a SHA-256 of the token ids).
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


def read_tokens(source, tokenizer, need: float) -> list[list[int]]:
    """Token ids of the source's first documents, read until they hold ``need`` tokens (or it ends:
    ``math.inf`` reads them all)."""
    sep = int(tokenizer.eos_token_id is not None)  # the EOS that joins a document to the next
    docs = iter(source.documents())
    read: list[list[int]] = []
    total = 0
    try:
        for text in docs:
            ids = tokenizer(text, add_special_tokens=False)["input_ids"]
            read.append(ids)
            total += len(ids) + sep
            if total >= need:
                break
    finally:
        # a generator left half-read keeps its file or stream open until collected: close it now
        close = getattr(docs, "close", None)
        if close is not None:
            close()
    return read


def _read_tokens_shuffled(seq, tokenizer, need: int, rng) -> list[list[int]]:
    """Token ids of non-blank documents of ``seq`` in a seeded order, until they hold ``need`` tokens."""
    sep = int(tokenizer.eos_token_id is not None)
    read: list[list[int]] = []
    total = 0
    for i in rng.permutation(len(seq)):
        text = seq[i]
        if not text.strip():
            continue
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        read.append(ids)
        total += len(ids) + sep
        if total >= need:
            break
    return read


def countable(source) -> bool:
    """Whether the windows a source can give are counted before a run: a local file or the embedded corpus
    (read whole anyway); a hub data set would have to be downloaded and tokenized first."""
    from gradprune.data.sources import EmbeddedCorpus, TextFile

    return isinstance(source, EmbeddedCorpus | TextFile)


def available_windows(source, tokenizer, seq_len: int, num_samples: int) -> int:
    """How many windows of ``seq_len`` tokens the whole source holds as :func:`draw_windows` joins it
    (documents and their EOS separators), counted only up to ``num_samples``: the draw can be made
    exactly when the result is ``num_samples``."""
    sep = int(tokenizer.eos_token_id is not None)
    total = 0
    for text in (source.indexed() if countable(source) else source.documents()):
        if not text.strip():
            continue
        total += len(tokenizer(text, add_special_tokens=False)["input_ids"]) + sep
        if total >= seq_len * num_samples:
            return num_samples
    return total // seq_len


def draw_windows(source, tokenizer, seq_len: int, num_samples: int, seed: int) -> Windows:
    """Draw the windows; too little text for the request is a DataError naming the numbers."""
    need = seq_len * num_samples * _OVERSAMPLE
    rng = np.random.default_rng(seed)
    seq = getattr(source, "indexed", lambda: None)()  # duck-typed sources are streams
    if seq is not None:  # already in a seeded order over the whole source
        docs = _read_tokens_shuffled(seq, tokenizer, need, rng)
        order = range(len(docs))
    else:
        docs = read_tokens(source, tokenizer, need)
        order = rng.permutation(len(docs))
    if not docs:
        raise DataError(f"calibration data ({source.describe()}) holds no text")
    eos = tokenizer.eos_token_id
    stream: list[int] = []
    for i in order:
        stream.extend(docs[i])
        if eos is not None:
            stream.append(eos)
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
        "documents_read": len(docs),
        "order": "seeded over all documents" if seq is not None else "stream prefix, seeded shuffle",
        "stream_tokens": len(stream),
        "slots": slots.tolist(),
        "sha256": hashlib.sha256(arr.tobytes()).hexdigest(),
    }
    return Windows(ids, prov)
