"""Recipes: every shipped file validates; overrides; each bad input is one clear RecipeError."""

from __future__ import annotations

from pathlib import Path

import pytest

from gradprune.errors import RecipeError
from gradprune.recipe import Recipe, apply_overrides, load_recipe, parse_override

ROOT = Path(__file__).resolve().parents[1]
RECIPES = sorted((ROOT / "recipes").glob("*.yaml"))


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_every_shipped_recipe_validates(path):
    from gradprune.inspection import validate_command

    assert validate_command(str(path), []) == 0


def test_mistral_recipe_has_the_documented_settings():
    r = load_recipe(ROOT / "recipes/mistral_20.yaml")
    assert r.model.name_or_path == "mistralai/Mistral-7B-v0.3" and r.model.dtype == "bfloat16"
    assert r.pruning.ratio == 0.2 and r.pruning.scope == "global"
    assert r.pruning.attention_layers == (4, 30) and r.pruning.mlp_layers == (4, 30)
    assert r.calibration.seq_len == 64 and r.calibration.num_samples == 256
    assert r.importance.name == "taylor" and r.importance.params["order"] == "first"
    assert len(r.eval.tasks) == 7
    assert r.model.trust_remote_code is False


def test_overrides_apply_with_yaml_types_and_deletion():
    r = load_recipe(ROOT / "recipes/tiny.yaml", ["pruning.ratio=0.3", "calibration.seq_len=32",
                                                 "pruning.mlp_layers=[0, 2]", "~pruning.attention_layers"])
    assert r.pruning.ratio == 0.3 and r.calibration.seq_len == 32
    assert r.pruning.mlp_layers == (0, 2) and r.pruning.attention_layers is None
    r = load_recipe(str(ROOT / "recipes/tiny.yaml"), ["pruning.mlp_layers=[3, -1]"])
    assert r.pruning.mlp_layers == (3, -1) and r.pruning.attention_layers == (1, None)


def test_recipe_is_frozen():
    r = Recipe()
    with pytest.raises(Exception):  # noqa: B017 - pydantic raises ValidationError on frozen models
        r.pruning.ratio = 0.5


def test_parse_override():
    assert parse_override("a.b=1") == ("a.b", 1, False)
    assert parse_override("a.b=x=y") == ("a.b", "x=y", False)
    assert parse_override("~a.b") == ("a.b", None, True)


BAD = [
    # (overrides, expected fragment of the message)
    (["pruning.ratoi=0.3"], "pruning.ratoi: unknown key. Did you mean 'ratio'?"),
    (["prunning.ratio=0.3"], "prunning: unknown key. Did you mean 'pruning'?"),
    (["calibration.dataset.name=nope"], "unknown data plugin 'nope'"),
    (["pruning.ratio=1.5"], "pruning.ratio"),
    (["pruning.ratio=0"], "pruning.ratio"),
    (["pruning.ratio=abc"], "pruning.ratio"),
    (["calibration.seq_len=0"], "calibration.seq_len"),
    (["calibration.num_samples=-4"], "calibration.num_samples"),
    (["importance.name=taylr"], "Did you mean 'taylor'"),
    (["importance.params.order=third"], "importance.params.order"),
    (["normalizer.name=zscor"], "Did you mean 'zscore'"),
    (["stats.collectors=[grad_nrm]"], "unknown collectors plugin 'grad_nrm'"),
    (["pruning.mlp_layers=[5, 2]"], "pruning.mlp_layers"),
    (["pruning.scope=sideways"], "pruning.scope"),
    (["eval.limit=0"], "eval.limit"),
    (["eval.run=maybe"], "eval.run"),
    (["pruning.ratio"], "has no '='"),
    (["pruning.ratio.x=1"], "is a value, not a section"),
]


@pytest.mark.parametrize("overrides,fragment", BAD, ids=[b[0][0] for b in BAD])
def test_bad_overrides_are_clear_errors(overrides, fragment):
    with pytest.raises(RecipeError) as e:
        load_recipe(ROOT / "recipes/tiny.yaml", overrides)
    assert fragment in str(e.value)
    # value errors name the recipe file; syntax errors of an override quote the override itself
    assert "tiny.yaml" in str(e.value) or repr(overrides[0]) in str(e.value)


@pytest.mark.parametrize("content,fragment", [
    ("model: [unclosed", "not valid YAML"),
    ("", "is empty"),
    ("- a\n- b\n", "expected a mapping"),
    ("modle: {}\n", "modle: unknown key. Did you mean 'model'?"),
    ("model: {name_or_path: x, dtpye: float32}\n", "model.dtpye: unknown key. Did you mean 'dtype'?"),
    ("!!python/object/apply:os.system ['echo hi']\n", "not valid YAML"),
])
def test_bad_files_are_clear_errors(tmp_path, content, fragment):
    p = tmp_path / "r.yaml"
    p.write_text(content)
    with pytest.raises(RecipeError) as e:
        load_recipe(p)
    assert fragment in str(e.value) and "r.yaml" in str(e.value)


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(RecipeError, match="does not exist"):
        load_recipe(tmp_path / "nope.yaml")
    with pytest.raises(RecipeError, match="is a directory"):
        load_recipe(tmp_path)


def test_apply_overrides_does_not_touch_input():
    data = {"pruning": {"ratio": 0.2}}
    out = apply_overrides(data, ["pruning.ratio=0.4"])
    assert data["pruning"]["ratio"] == 0.2 and out["pruning"]["ratio"] == 0.4


def test_a_collector_listed_twice_is_refused():
    from gradprune.errors import RecipeError
    from gradprune.recipe import load_recipe

    with pytest.raises(RecipeError, match="grad_norm listed more than once"):
        load_recipe(Path(__file__).resolve().parents[1] / "recipes/tiny.yaml", ["stats.collectors=[grad_norm,grad_norm]"])


# --------------------------------------------------------------------------------------------------
# every problem at once; plugin params (collectors too); a plugin switched by an override

TINY = ROOT / "recipes/tiny.yaml"


def test_every_problem_is_listed_at_once(tmp_path):
    p = tmp_path / "r.yaml"
    p.write_text("calibration: {seq_len: 0}\npruning: {ratoi: 0.3}\nstats: {collectors: [grad_norm, grad_nrm]}\n"
                 "eval: {batch_size: x}\n")
    with pytest.raises(RecipeError) as e:
        load_recipe(p, ["pruning.ratio"])
    lines = e.value.lines()
    assert lines[0] == "override 'pruning.ratio' has no '=': expected dotted.key=value, e.g. pruning.ratio=0.3"
    rest = lines[1:]
    assert len(rest) == 4 and all(line.startswith(f"{p} (with command-line overrides): ") for line in rest)
    text = "\n".join(rest)
    assert "calibration.seq_len: Input should be greater than 0 (got 0)" in text
    assert "pruning.ratoi: unknown key. Did you mean 'ratio'?" in text
    assert "stats.collectors: unknown collectors plugin 'grad_nrm'. Did you mean 'grad_norm'" in text
    # a union's members are one line under the key itself, not one per member
    assert "eval.batch_size: Input should be a valid integer, unable to parse string as an integer, or " \
           "Input should be 'auto' (got 'x')" in text


def test_every_plugin_param_problem_is_listed_at_once():
    with pytest.raises(RecipeError) as e:
        load_recipe(TINY, ["importance.params.ordr=first", "normalizer.params.x=1", "stats.params.grad_norm.q=1"])
    text = "\n".join(e.value.lines())
    assert len(e.value.lines()) == 3
    assert "importance.params.ordr: unknown key of importance plugin 'taylor'. Did you mean 'order'?" in text
    assert "normalizer.params.x: unknown key of normalizers plugin 'zscore'." in text
    assert "stats.params.grad_norm.q: unknown key of collectors plugin 'grad_norm'. It takes no params." in text


def test_collector_params_go_to_a_listed_collector(register):
    from pydantic import BaseModel, ConfigDict

    from gradprune import plugins
    from gradprune.stats.gradient import StatCollector

    class QParams(BaseModel):
        model_config = ConfigDict(extra="forbid", frozen=True)
        q: float = 0.5

    class GradQuantile(StatCollector):
        """A made-up collector with params."""

        Params = QParams

    register(plugins.COLLECTORS, "grad_quantile", GradQuantile)
    r = load_recipe(TINY, ["stats.collectors=[grad_norm, grad_quantile]", "stats.params.grad_quantile.q=0.9"])
    assert r.stats.collectors == ["grad_norm", "grad_quantile"] and r.stats.params == {"grad_quantile": {"q": 0.9}}
    assert r.to_dict()["stats"]["collectors"] == ["grad_norm", "grad_quantile"]  # still plain names
    with pytest.raises(RecipeError, match=r"stats\.params\.grad_quantil: 'grad_quantil' is not in stats\.collectors"
                                          r".*Did you mean 'grad_quantile'"):
        load_recipe(TINY, ["stats.collectors=[grad_norm, grad_quantile]", "stats.params.grad_quantil.q=0.9"])
    with pytest.raises(RecipeError, match=r"stats\.params\.grad_quantile\.q: Input should be a valid number"):
        load_recipe(TINY, ["stats.collectors=[grad_quantile]", "stats.params.grad_quantile.q=abc"])


def test_a_plugin_switched_by_an_override_drops_the_params_it_does_not_take():
    from gradprune.errors import GradpruneWarning

    with pytest.warns(GradpruneWarning, match=r"importance\.name switched from 'taylor' to 'magnitude' by an "
                                              r"override: .*importance\.params\.order \('magnitude' takes no"):
        r = load_recipe(TINY, ["importance.name=magnitude"])
    assert r.importance.name == "magnitude" and r.importance.params == {}
    # params the overrides set are the user's: never dropped, so a wrong one is an error
    with pytest.warns(GradpruneWarning, match="granularity"), \
            pytest.raises(RecipeError, match=r"importance\.params\.order: unknown key of importance plugin 'magnitude'"):
        load_recipe(TINY, ["importance.name=magnitude", "importance.params.order=first"])


def test_a_switch_to_a_preset_drops_params_the_preset_binds_otherwise(tmp_path):
    from gradprune.errors import GradpruneWarning

    p = tmp_path / "r.yaml"
    p.write_text("importance: {name: taylor, params: {order: second}}\n"
                 "calibration: {dataset: {name: text_file, path: corpus.txt}}\n")
    with pytest.warns(GradpruneWarning) as caught:
        r = load_recipe(p, ["importance.name=taylor_first", "calibration.dataset.name=embedded"])
    messages = [str(w.message) for w in caught]
    assert any("preset 'taylor_first' binds order: first" in m for m in messages)
    assert any("calibration.dataset.path ('embedded' takes no 'path')" in m for m in messages)
    assert r.importance.params == {} and r.calibration.dataset.model_dump() == {"name": "embedded"}


def test_params_of_a_collector_an_override_removes_go_with_it(tmp_path, register):
    from gradprune import plugins
    from gradprune.errors import GradpruneWarning
    from gradprune.stats.gradient import GradNormCollector

    register(plugins.COLLECTORS, "norm_alias", GradNormCollector)
    p = tmp_path / "r.yaml"
    p.write_text("stats: {collectors: [norm_alias], params: {norm_alias: {}}}\n")
    assert load_recipe(p).stats.params == {"norm_alias": {}}
    with pytest.warns(GradpruneWarning, match=r"dropped .*stats\.params\.norm_alias"):
        r = load_recipe(p, ["stats.collectors=[grad_max]"])
    assert r.stats.params == {}


def test_no_switch_no_warning(recwarn):
    load_recipe(TINY, ["importance.name=taylor", "pruning.ratio=0.3"])
    assert not [w for w in recwarn if "switched" in str(w.message)]
