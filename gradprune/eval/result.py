"""What an evaluation returns: flat metrics (run.json / search CSV columns) and the details behind them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class EvalResult:
    """``metrics``: flat name → number (``ppl``, ``ppl_wikitext2``, ``acc_piqa``, ``acc_mean``, ...).

    ``info``: how they were obtained: ``ppl`` (protocol, seq_lens, windows and tokens per text),
    ``zeroshot`` (lm-eval and task versions, n per task, few-shot, limit, timings per task) and
    ``seconds`` (wall time of each part).
    """

    metrics: dict[str, float] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return {"metrics": dict(self.metrics), "info": self.info}
