"""Every registered normalizer (built-in or added) keeps shape, is finite, and preserves order."""

from __future__ import annotations

import pytest
import torch

from gradprune import plugins

SCORES = [torch.tensor([3.0, 1.0, 2.0, 10.0]), torch.tensor([5.0]), torch.tensor([2.0, 2.0, 2.0])]


@pytest.mark.parametrize("name", plugins.NORMALIZERS.names())
@pytest.mark.parametrize("scores", SCORES, ids=["spread", "single", "constant"])
def test_normalizer_common_contract(name, scores):
    norm = plugins.NORMALIZERS.build(name)
    out = norm(scores)
    assert out.shape == scores.shape and torch.isfinite(out).all()
    if name != "rank" and scores.numel() > 1 and scores.std() > 0:
        # monotone: the ranking within a layer never changes
        assert torch.equal(torch.argsort(out), torch.argsort(scores))


def test_specific_values():
    s = torch.tensor([1.0, 2.0, 3.0])
    n = plugins.NORMALIZERS.build
    torch.testing.assert_close(n("zscore")(s), torch.tensor([-1.0, 0.0, 1.0]))
    torch.testing.assert_close(n("mean")(s), s / 2)
    torch.testing.assert_close(n("max")(s), s / 3)
    torch.testing.assert_close(n("sum")(s), s / 6)
    torch.testing.assert_close(n("l2")(s), s / s.norm())
    torch.testing.assert_close(n("rank")(torch.tensor([30.0, 10.0, 20.0])), torch.tensor([1.0, 0.0, 0.5]))
    torch.testing.assert_close(n("none")(s), s)
