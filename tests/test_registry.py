"""The generic plugin registry: lookup, presets, close matches, entry points, broken plugins."""

from __future__ import annotations

from importlib import metadata

import pytest

from gradprune import plugins
from gradprune.errors import PluginError
from gradprune.registry import Registry


def test_unknown_name_names_family_close_matches_and_available():
    with pytest.raises(PluginError) as e:
        plugins.IMPORTANCE.get("taylr")
    msg = str(e.value)
    assert "importance" in msg and "'taylr'" in msg and "'taylor'" in msg and "magnitude" in msg


def test_preset_binds_params():
    p = plugins.IMPORTANCE.validate_params("taylor_mix", {}, "importance.params")
    assert p.order == "mix" and p.granularity == "element"
    # the user's params override the preset
    p = plugins.IMPORTANCE.validate_params("fisher", {"per_sample": True}, "importance.params")
    assert p.order == "second" and p.per_sample


def test_params_are_checked_with_dotted_path():
    with pytest.raises(PluginError, match=r"importance\.params\.ordr: unknown key"):
        plugins.IMPORTANCE.validate_params("taylor", {"ordr": "first"}, "importance.params")
    with pytest.raises(PluginError, match="order"):
        plugins.IMPORTANCE.validate_params("taylor", {"order": "third"}, "importance.params")


@pytest.mark.parametrize("family", sorted(plugins.FAMILIES))
def test_every_builtin_loads_and_subclasses_its_base(family):
    reg = plugins.FAMILIES[family]
    for name in reg.names():
        obj = reg.get(name)
        assert isinstance(obj, type)
        assert reg.describe(name)


def test_registered_names_snapshot():
    assert plugins.IMPORTANCE.names() == sorted(
        ["taylor", "taylor_first", "taylor_second", "fisher", "taylor_mix", "magnitude", "random", "activation",
         "flap"])
    assert plugins.NORMALIZERS.names() == sorted(["none", "mean", "max", "sum", "l2", "zscore", "rank"])
    assert plugins.COLLECTORS.names() == ["grad_max", "grad_mean", "grad_norm", "grad_snr", "grad_std", "grad_var"]
    assert plugins.DATA.names() == ["embedded", "hf", "instructions", "text_file"]
    assert plugins.RECOVERY.names() == ["lora"]
    assert plugins.LOGGERS.names() == ["csv", "mlflow", "tensorboard", "wandb"]


def test_base_class_is_enforced():
    reg = Registry("things", base_cls="gradprune.importance.base:ImportanceEstimator")
    reg.add("bad", "collections:OrderedDict")
    with pytest.raises(PluginError, match="not a subclass of ImportanceEstimator"):
        reg.get("bad")


def _fake_entry_points(group_map):
    def fake(group=None, **kw):
        return [metadata.EntryPoint(name=n, value=v, group=group) for n, v in group_map.get(group, [])]
    return fake


def test_entry_points_are_found_and_a_broken_one_is_isolated(monkeypatch):
    reg = Registry("importance", base_cls="gradprune.importance.base:ImportanceEstimator",
                   builtins={"taylor": "gradprune.importance.taylor:TaylorImportance"})
    monkeypatch.setattr(metadata, "entry_points", _fake_entry_points({"gradprune.importance": [
        ("ext_magnitude", "gradprune.importance.magnitude:MagnitudeImportance"),
        ("broken", "no_such_module_xyz:Thing"),
        ("taylor", "collections:OrderedDict"),  # cannot shadow a built-in
    ]}))
    assert {"ext_magnitude", "broken", "taylor"} <= set(reg.names())
    assert reg.entry("ext_magnitude").origin.startswith("entry point")
    assert reg.get("ext_magnitude").__name__ == "MagnitudeImportance"
    assert reg.get("taylor").__name__ == "TaylorImportance"
    with pytest.raises(PluginError, match="failed to load"):
        reg.get("broken")
    assert "broken" in reg.broken
    assert reg.describe("broken").startswith("[failed to load]")
    assert reg.get("ext_magnitude")  # the others keep working


# --------------------------------------------------------------------------------------------------
# one plugin protocol: the registry name is the plugin's name; params are checked with a did-you-mean


@pytest.fixture
def collectors():
    """The collectors registry; what a test adds to it is forgotten afterwards."""
    with plugins.COLLECTORS.scoped() as reg:
        yield reg


def test_a_scoped_registration_is_gone_after_its_block_even_on_error():
    from gradprune.stats.gradient import GradNormCollector

    before = plugins.COLLECTORS.names()
    with plugins.COLLECTORS.registered("norm_alias", GradNormCollector) as reg:
        assert reg is plugins.COLLECTORS and reg.build("norm_alias").name == "norm_alias"
        assert "norm_alias" in plugins.COLLECTORS.names()
    assert plugins.COLLECTORS.names() == before and "norm_alias" not in plugins.COLLECTORS
    with pytest.raises(RuntimeError), plugins.COLLECTORS.scoped():
        plugins.COLLECTORS.add("grad_norm", GradNormCollector, origin="test")  # even a replaced built-in
        raise RuntimeError
    assert plugins.COLLECTORS.entry("grad_norm").origin == "gradprune"
    assert plugins.COLLECTORS.names() == before


def test_a_scope_that_rereads_entry_points_forgets_them_again_on_exit(monkeypatch):
    reg = Registry("importance", base_cls="gradprune.importance.base:ImportanceEstimator",
                   builtins={"taylor": "gradprune.importance.taylor:TaylorImportance"})
    monkeypatch.setattr(metadata, "entry_points", _fake_entry_points({"gradprune.importance": [
        ("ext_magnitude", "gradprune.importance.magnitude:MagnitudeImportance")]}))
    assert reg.names() == ["ext_magnitude", "taylor"]
    monkeypatch.setattr(metadata, "entry_points", _fake_entry_points({"gradprune.importance": [
        ("ext_random", "gradprune.importance.random_baseline:RandomImportance")]}))
    with reg.scoped(reread_entry_points=True):
        assert reg.names() == ["ext_random", "taylor"]  # read again: the new package's, not the old one's
    assert reg.names() == ["ext_magnitude", "taylor"]


def test_build_names_the_instance_after_its_registry_name(collectors):
    from gradprune.stats.gradient import GradNormCollector, StatCollector

    class GradCount(StatCollector):
        """Counts gradient elements (no `name` attribute anywhere)."""

    collectors.add("grad_count", GradCount)
    collectors.add("norm_alias", GradNormCollector)
    assert collectors.build("grad_count").name == "grad_count"
    alias = collectors.build("norm_alias")
    assert alias.name == "norm_alias" and type(alias) is GradNormCollector  # the key is the registry name
    assert plugins.IMPORTANCE.build("taylor_first").name == "taylor_first"


def test_a_misspelled_param_gets_a_did_you_mean_and_every_bad_param_is_listed():
    with pytest.raises(PluginError) as e:
        plugins.IMPORTANCE.validate_params("taylor", {"ordr": "first", "granularity": "nope"}, "importance.params")
    lines = e.value.lines()
    assert len(lines) == 2 and str(e.value) == "; ".join(lines)
    assert "importance.params.ordr: unknown key of importance plugin 'taylor'. Did you mean 'order'?" in lines
    assert any(line.startswith("importance.params.granularity: ") for line in lines)
    with pytest.raises(PluginError, match=r"stats\.params\.grad_norm\.q: unknown key .* It takes no params"):
        plugins.COLLECTORS.validate_params("grad_norm", {"q": 1}, "stats.params.grad_norm")


def test_collectors_take_typed_params(collectors):
    from pydantic import BaseModel, ConfigDict, Field

    from gradprune.stats.gradient import StatCollector

    class QuantileParams(BaseModel):
        model_config = ConfigDict(extra="forbid", frozen=True)
        q: float = Field(0.5, gt=0, lt=1)

    class GradQuantile(StatCollector):
        """A q-quantile of |g| (only its params matter here)."""

        Params = QuantileParams

    collectors.add("grad_quantile", GradQuantile)
    assert collectors.build("grad_quantile", {"q": 0.9}).params.q == 0.9
    assert collectors.build("grad_quantile").params.q == 0.5
    with pytest.raises(PluginError, match=r"stats\.params\.grad_quantile\.q: Input should be less than 1"):
        collectors.build("grad_quantile", {"q": 2}, "stats.params.grad_quantile")


def test_a_plugin_on_the_earlier_protocol_or_reading_something_unknown_is_refused_when_defined():
    from gradprune.stats.gradient import StatCollector

    with pytest.raises(TypeError, match="no longer has: use reads = {'mean_gradient'} and observe_mean"):
        class Earlier(StatCollector):  # noqa: F841 - refused when the class is defined
            uses_mean_gradient = True

    with pytest.raises(TypeError, match="expected reads among"):
        class Unknown(StatCollector):  # noqa: F841
            reads = frozenset({"hessian"})

    class OwnMean(StatCollector):
        reads = frozenset({"mean_gradient"})

        def observe_mean(self, layer, role, weight, grad, sq):
            self.accumulator("g2")[layer.index] += grad.square().sum()

    assert OwnMean().needs_gradients and not OwnMean().needs_activations
