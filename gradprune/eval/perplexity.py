"""Perplexity over non-overlapping windows: the protocol of LLM-Pruner / FLAP (128) and Wanda (2048).

The text is tokenized once as a whole, with the tokenizer's default special tokens (so a BOS, if the
tokenizer adds one, starts only the first window). It is cut into ``len // seq_len`` windows of
``seq_len`` tokens; the last partial window is dropped. In each window every token but the first is
predicted from the tokens before it. Perplexity = exp(token-weighted mean NLL) over all predicted
tokens, the NLL summed in fp32 (log-softmax of fp32 logits) whatever the model's dtype.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from gradprune.errors import EvalError

PROTOCOL = (
    "non-overlapping windows of seq_len tokens over the whole tokenized text (default special tokens), "
    "last partial window dropped, first token of each window not predicted, "
    "ppl = exp(sum NLL / predicted tokens) with fp32 log-softmax"
)


@dataclass(frozen=True)
class PplStats:
    """The sums behind one perplexity number."""

    seq_len: int
    windows: int
    predicted_tokens: int
    dropped_tail_tokens: int
    nll_sum: float
    seconds: float

    @property
    def ppl(self) -> float:
        """exp(mean NLL per predicted token); inf when that overflows, nan for a model that gives nan."""
        try:
            return math.exp(self.nll_sum / self.predicted_tokens)
        except OverflowError:
            return math.inf

    def to_dict(self) -> dict[str, Any]:
        """JSON-able record of the sums and the resulting perplexity."""
        return {**asdict(self), "nll_mean": self.nll_sum / self.predicted_tokens, "ppl": self.ppl}


def ppl_batch_size(batch_size: int | str, seq_len: int, vocab_size: int, model: Any = None,
                   budget: int | None = None) -> int:
    """Windows per forward pass: the recipe's number, or for ``auto`` what ``budget`` bytes hold
    (:func:`gradprune.memory.batches.ppl_windows`, the rule the memory plan sizes this batch with): the
    logits in the model's dtype, their fp32 copy and fp32 log-softmax, and one layer's activations. The
    default budget is :func:`gradprune.eval.batching.device_budget` (the running stage's planned budget,
    else half the accelerator memory free now); on the CPU (or without ``model``) fp32 logits of ≲256 MiB,
    at most 64 windows."""
    from gradprune.eval.batching import device_budget, model_dtype_bytes
    from gradprune.memory.batches import config_widths, ppl_windows

    if isinstance(batch_size, int):
        return batch_size
    if budget is None and model is not None:
        budget = device_budget(_model_device(model))
    if model is None:
        return ppl_windows(batch_size, seq_len, vocab_size, budget=budget)
    return ppl_windows(batch_size, seq_len, vocab_size, model_dtype_bytes(model), config_widths(model.config), budget)


def tokenize_text(tokenizer: Any, text: str) -> list[int]:
    """The whole text as one token list (no truncation, no length warning)."""
    return list(tokenizer(text, add_special_tokens=True, verbose=False)["input_ids"])


def _model_device(model: Any) -> Any:
    device = getattr(model, "device", None)
    return device if device is not None else next(model.parameters()).device


def batch_nll(model: Any, windows: Any) -> float:
    """Summed NLL (fp32) of every token but the first in each row of ``windows`` [batch, seq_len]."""
    import torch.nn.functional as F

    logits = model(input_ids=windows, use_cache=False).logits[:, :-1]
    targets = windows[:, 1:]
    nll = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="sum")
    return float(nll)


def perplexity(
    model: Any,
    token_ids: list[int],
    seq_len: int,
    batch_size: int,
    max_windows: int | None = None,
    on_batch: Callable[[int], None] | None = None,
) -> PplStats:
    """Perplexity of ``model`` over the windows of ``token_ids`` (see the module docstring)."""
    import torch

    n_windows = len(token_ids) // seq_len
    if n_windows == 0:
        raise EvalError(f"perplexity: the text has {len(token_ids)} tokens, fewer than one window of {seq_len}")
    if max_windows is not None:
        n_windows = min(n_windows, max_windows)
    device = _model_device(model)
    ids = torch.tensor(token_ids[: n_windows * seq_len], dtype=torch.long).view(n_windows, seq_len)
    start, nll_sum, i = time.perf_counter(), 0.0, 0
    with torch.inference_mode():
        while i < n_windows:
            chunk = ids[i: i + batch_size].to(device)
            try:
                nll_sum += batch_nll(model, chunk)
            except torch.OutOfMemoryError:
                if batch_size == 1:
                    raise EvalError(f"perplexity: out of memory with one window of {seq_len} tokens") from None
                batch_size = max(1, batch_size // 2)
                continue
            i += len(chunk)
            if on_batch is not None:
                on_batch(len(chunk))
    return PplStats(
        seq_len=seq_len,
        windows=n_windows,
        predicted_tokens=n_windows * (seq_len - 1),
        dropped_tail_tokens=len(token_ids) - (len(token_ids) // seq_len) * seq_len,
        nll_sum=nll_sum,
        seconds=time.perf_counter() - start,
    )


def evaluate_ppl(model: Any, tokenizer: Any, cfg: Any, progress: Any = None) -> tuple[dict[str, float], dict]:
    """Perplexity of every eval.ppl_datasets text at every eval.ppl_seq_len → (metrics, info).

    Metrics: ``ppl_<key>`` (at the first seq_len), ``ppl_<key>_<seq_len>`` when several seq_lens are
    asked for, and ``ppl`` = the first data set at the first seq_len.
    """
    from gradprune.eval.ppl_data import load_ppl_text

    seq_lens = cfg.ppl_seq_len if isinstance(cfg.ppl_seq_len, list) else [cfg.ppl_seq_len]
    vocab = int(getattr(model.config, "vocab_size", 0) or len(tokenizer))
    metrics: dict[str, float] = {}
    datasets: dict[str, Any] = {}
    windows_per_batch: dict[str, int] = {}
    for name in cfg.ppl_datasets:
        text = load_ppl_text(name)
        ids = tokenize_text(tokenizer, text.text)
        by_len = {}
        for seq_len in seq_lens:
            row = f"ppl:{text.key}:{seq_len}"
            total = len(ids) // seq_len
            total = min(total, cfg.ppl_max_windows) if cfg.ppl_max_windows else total
            if progress is not None:
                progress.add_row(row, f"ppl {text.key} @{seq_len}", total=total)
            advance = (lambda n, row=row: progress.advance(row, n)) if progress is not None else None
            batch = ppl_batch_size(cfg.batch_size, seq_len, vocab, model)
            windows_per_batch[str(seq_len)] = batch
            stats = perplexity(model, ids, seq_len, batch, cfg.ppl_max_windows, on_batch=advance)
            if progress is not None:
                progress.finish(row, f"ppl {stats.ppl:.4g} ({stats.windows} windows)")
            by_len[str(seq_len)] = stats.to_dict()
        metrics[f"ppl_{text.key}"] = by_len[str(seq_lens[0])]["ppl"]
        if len(seq_lens) > 1:
            metrics.update({f"ppl_{text.key}_{n}": by_len[str(n)]["ppl"] for n in seq_lens})
        datasets[text.key] = {"name": name, "source": text.source, "tokens": len(ids), "by_seq_len": by_len}
    if datasets:
        metrics["ppl"] = metrics[f"ppl_{next(iter(datasets))}"]
    info = {"protocol": PROTOCOL, "seq_lens": seq_lens, "max_windows": cfg.ppl_max_windows,
            "windows_per_batch": windows_per_batch, "datasets": datasets}
    return metrics, info
