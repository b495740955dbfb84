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
