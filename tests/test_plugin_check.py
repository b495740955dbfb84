"""``gradprune.testing.check_plugin`` passes every registered estimator and collector and the extension
fixture's plugins, and fails a plugin that breaks the protocol."""

from __future__ import annotations

import pytest
import torch

from gradprune import plugins
from gradprune.stats.gradient import StatCollector
from gradprune.testing import check_plugin


@pytest.mark.parametrize("name", plugins.IMPORTANCE.names())
def test_every_registered_estimator_keeps_the_protocol(name):
    est = plugins.IMPORTANCE.build(name)
    out = check_plugin(est)
    assert any(k.startswith("score:") for k in out)


@pytest.mark.parametrize("params", [{"granularity": "element"}, {"granularity": "joint"},
                                    {"granularity": "element", "reduction": "max"}])
def test_taylor_at_every_level_keeps_the_protocol(params):
    check_plugin(plugins.IMPORTANCE.build("taylor", params))


@pytest.mark.parametrize("name", plugins.COLLECTORS.names())
def test_every_registered_collector_keeps_the_protocol(name):
    out = check_plugin(plugins.COLLECTORS.build(name))
    assert len(out["per_layer"]) == 2


def test_the_extension_fixtures_plugins_keep_the_protocol():
    from tests.plugin_fixture.ext import GradL1Collector, GradSignImportance

    check_plugin(GradSignImportance)
    # a mean of |g| over elements is not a mean over samples: two micro-batches and four need not agree
    check_plugin(GradL1Collector, split_invariant=False)


class BadReduction(StatCollector):
    reads = frozenset({"mean_gradient"})

    def observe_mean(self, layer, role, weight, grad, sq):
        self.accumulator("g2")[layer.index] += grad.square().sum()
        self._accumulators["g2"] = (self._accumulators["g2"][0], "mean")  # not a reduction calibration knows

    def per_layer(self):
        return self._accumulators["g2"][0].tolist()


class SplitDependent(StatCollector):
    """Sums each micro-batch's ‖g‖ unweighted: depends on how the samples are split, while claiming not to."""

    reads = frozenset({"gradients"})

    def observe_grad(self, layer, role, weight, grad):
        self.accumulator("norm")[layer.index] += torch.linalg.vector_norm(grad.double())

    def per_layer(self):
        return self.accumulator("norm").tolist()


def test_a_plugin_that_breaks_the_protocol_fails_the_check():
    with pytest.raises(AssertionError, match="reduction 'mean'"):
        check_plugin(BadReduction)
    check_plugin(SplitDependent)  # deterministic: passes as long as the split is not claimed not to matter
    with pytest.raises(AssertionError, match="two micro-batches vs one per sample: per_layer differs"):
        check_plugin(SplitDependent, split_invariant=True)
