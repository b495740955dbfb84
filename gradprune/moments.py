"""The mean gradient G and the mean squared gradient F, kept once for every plugin that reads them.

Per prunable weight, fp32: Σ_b n_b·g_b (for G = Σ_b n_b·g_b / N) when some plugin reads
``"mean_gradient"``, Σ_b n_b·g_b² (for F) when some plugin reads ``"mean_square"``. Each is filled one of
two ways, as the strategy decides:

* whole (one process, DDP): from each micro-batch's gradient in the hook, one fused ``add_`` /
  ``addcmul_`` (the gradient read once as it is, the fp32 sum read and written); DDP sums them over the
  ranks at the end;
* by rows (FSDP): each rank keeps the rows FSDP gives it, ``add_rows`` adds the rows of a micro-batch's
  gradient summed over the ranks (FSDP's own reduce-scatter for G; a reduce-scatter of n·g² for F).

After the pass :meth:`piece` hands a plugin G and F (float64) for the rows this process holds.
"""

from __future__ import annotations

import torch


class MeanMoments:
    """The fp32 sums behind G and F; ``on_host``: in host memory (pinned where CUDA is), for a GPU too
    small for them, each gradient copied there and added in fp32 as on the device."""

    def __init__(self, grad: bool, sq: bool, on_host: bool = False) -> None:
        self.keeps_grad, self.keeps_sq, self.on_host = grad, sq, on_host
        self.grad_sums: dict[tuple[int, str], torch.Tensor] = {}
        self.sq_sums: dict[tuple[int, str], torch.Tensor] = {}

    @property
    def any(self) -> bool:
        """Whether any sum is kept."""
        return self.keeps_grad or self.keeps_sq

    def _sum(self, store: dict, key: tuple[int, str], like: torch.Tensor) -> torch.Tensor:
        if key not in store:
            if self.on_host:
                store[key] = torch.zeros(like.shape, dtype=torch.float32, pin_memory=torch.cuda.is_available())
            else:
                store[key] = torch.zeros(like.shape, dtype=torch.float32, device=like.device)
        return store[key]

    def add(self, key: tuple[int, str], grad: torch.Tensor, n: float) -> None:
        """Fold one micro-batch's whole gradient of the weight ``key`` (the mean over ``n`` samples)."""
        if not self.any:
            return
        # bf16 read once, converted inside the fused add (on the host: one fp32 copy of the gradient there)
        g = grad.to("cpu", torch.float32) if self.on_host else grad
        if self.keeps_grad:
            self._sum(self.grad_sums, key, g).add_(g, alpha=n)
        if self.keeps_sq:
            self._sum(self.sq_sums, key, g).addcmul_(g, g, value=n)

    def add_rows(self, key: tuple[int, str], grad_rows: torch.Tensor | None, sq_rows: torch.Tensor | None,
                 alpha: float = 1.0) -> None:
        """FSDP: add this rank's rows of Σ over the ranks of n·g (``grad_rows``, times ``alpha``) and of
        n·g² (``sq_rows``)."""
        for store, rows, a in ((self.grad_sums, grad_rows, alpha), (self.sq_sums, sq_rows, 1.0)):
            if rows is not None:
                src = rows.to("cpu", torch.float32) if self.on_host else rows
                self._sum(store, key, src).add_(src, alpha=a)

    def weights(self) -> list[tuple[int, str]]:
        """Every weight with a sum, in a fixed order."""
        return sorted(set(self.grad_sums) | set(self.sq_sums))

    def entries(self) -> list[tuple[str, torch.Tensor, str]]:
        """The sums as ``(name, tensor, "rows")`` accumulators (DDP sums them over the ranks)."""
        out = [(f"g:{k[0]}.{k[1]}", t, "rows") for k, t in sorted(self.grad_sums.items())]
        return out + [(f"f:{k[0]}.{k[1]}", t, "rows") for k, t in sorted(self.sq_sums.items())]

    def piece(self, key: tuple[int, str], n_samples: float, device: torch.device
              ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """(G, F) of the rows held for ``key``, float64 on ``device`` (None: not kept); statistics that
        cancel (a signed sum, a variance) stay exact in float64."""
        def mean(store: dict) -> torch.Tensor | None:
            return store[key].to(device, torch.float64) / n_samples if key in store else None

        return mean(self.grad_sums), mean(self.sq_sums)

    def clear(self) -> None:
        """Drop the sums (parameter-sized) at once."""
        self.grad_sums.clear()
        self.sq_sums.clear()
