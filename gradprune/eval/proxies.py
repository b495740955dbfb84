"""Cheap post-pruning proxies: a few seconds of evaluation that a gradient statistic must beat.

On ``eval.proxy_windows`` windows of ``eval.proxy_seq_len`` tokens of a held-out text (by default the
first of ``eval.ppl_datasets``, which calibration never reads; the same windows in every trial of a
search), after pruning:

* ``proxy_loss``: the pruned model's mean token NLL (nats);
* ``proxy_kl``: mean over tokens of KL(p_dense ‖ p_pruned) of the next-token distributions (nats);
* ``proxy_flip``: the fraction of tokens whose arg-max next token changed (Dutta et al. 2024 found KL
  and such flips track accuracy after compression);
* ``proxy_dense_loss``, and ``time_proxy`` (seconds, dense + pruned passes).

The dense model's log-probabilities are computed before calibration on the same device and dtype the
pruned model is evaluated with, and kept on the host in fp32 (windows × (seq_len − 1) × vocab × 4
bytes: 32 × 127 × 32,768 ≈ 0.5 GB for a Mistral vocabulary).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from gradprune.errors import EvalError


@dataclass
class ProxyReference:
    """The proxy windows and the dense model's log-probabilities on them."""

    ids: Any  # [windows, seq_len] int64, host
    dense_logprobs: Any  # [windows, seq_len - 1, vocab] fp32, host
    dense_loss: float
    source: str
    seconds: float


def proxy_text_name(cfg: Any) -> str | None:
    """The held-out text of the proxies: ``eval.proxy_text``, else (when the run evaluates) the first
    perplexity data set; None when there are no proxies to compute."""
    if cfg.proxy_windows == 0:
        return None
    if cfg.proxy_text:
        return cfg.proxy_text
    return cfg.ppl_datasets[0] if cfg.run != "none" and cfg.ppl_datasets else None


def proxy_windows(tokenizer: Any, name: str, n: int, seq_len: int) -> tuple[Any, str]:
    """``n`` non-overlapping windows spread evenly over the held-out text ``name`` (an eval.ppl_datasets entry)."""
    import torch

    from gradprune.eval.perplexity import tokenize_text
    from gradprune.eval.ppl_data import load_ppl_text

    text = load_ppl_text(name)
    ids = tokenize_text(tokenizer, text.text)
    slots = len(ids) // seq_len
    if slots < n:
        raise EvalError(f"eval.proxy_windows: {text.key} holds {slots} windows of {seq_len} tokens, fewer than "
                        f"the {n} asked; lower eval.proxy_windows or eval.proxy_seq_len")
    step = slots // n
    rows = [ids[i * step * seq_len: (i * step + 1) * seq_len] for i in range(n)]
    return torch.tensor(rows, dtype=torch.long), text.source


def _log_probs(model: Any, ids: Any, batch: int = 8):
    """Next-token log-probabilities [n, seq_len - 1, vocab] (fp32, host) and the summed NLL."""
    import torch

    device = next(model.parameters()).device
    out, nll = [], 0.0
    with torch.inference_mode():
        for chunk in ids.split(batch):
            chunk = chunk.to(device)
            lp = model(input_ids=chunk, use_cache=False).logits[:, :-1].float().log_softmax(-1)
            nll += float(-lp.gather(-1, chunk[:, 1:, None]).sum())
            out.append(lp.cpu())
    return torch.cat(out), nll


def dense_reference(model: Any, tokenizer: Any, cfg: Any) -> ProxyReference | None:
    """The dense model's side of the proxies (None when ``eval.proxy_windows`` is 0 or no text is set)."""
    name = proxy_text_name(cfg)
    if name is None:
        return None
    start = time.perf_counter()
    ids, source = proxy_windows(tokenizer, name, cfg.proxy_windows, cfg.proxy_seq_len)
    lp, nll = _log_probs(model, ids)
    return ProxyReference(ids, lp, nll / lp.shape[0] / lp.shape[1], source, time.perf_counter() - start)


def proxy_metrics(model: Any, ref: ProxyReference) -> tuple[dict[str, float], dict]:
    """The pruned model's proxies against ``ref`` → (metrics, info)."""
    start = time.perf_counter()
    lp, nll = _log_probs(model, ref.ids)
    tokens = lp.shape[0] * lp.shape[1]
    dense = ref.dense_logprobs
    kl = float((dense.exp() * (dense - lp)).sum(-1).sum()) / tokens
    flips = float((dense.argmax(-1) != lp.argmax(-1)).sum()) / tokens
    seconds = ref.seconds + time.perf_counter() - start
    metrics = {"proxy_loss": nll / tokens, "proxy_kl": max(kl, 0.0), "proxy_flip": flips,
               "proxy_dense_loss": ref.dense_loss, "time_proxy": round(seconds, 4)}
    info = {"windows": int(ref.ids.shape[0]), "seq_len": int(ref.ids.shape[1]), "tokens": tokens,
            "source": ref.source, "seconds": seconds, "dense_logprobs_bytes": dense.numel() * 4}
    return metrics, info
