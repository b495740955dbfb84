"""The original tool's names: its flags are aliases of recipe keys, its CSV column names get a hint."""

from __future__ import annotations

from pathlib import Path

import pytest

from gradprune import cli
from gradprune.errors import RecipeError
from gradprune.recipe import load_recipe

ROOT = Path(__file__).resolve().parents[1]
TINY = str(ROOT / "recipes/tiny.yaml")


def test_original_flags_become_overrides_before_the_users_own(monkeypatch):
    seen = {}

    def fake_run(recipe, overrides, overwrite=False):
        seen["overrides"] = overrides
        return 0

    import gradprune.run

    monkeypatch.setattr(gradprune.run, "run_from_cli", fake_run)
    argv = ["run", TINY, "--pruning_ratio", "0.3", "--taylor_seq_len", "32", "--taylor-num-samples=16",
            "--base_model", "embedded", "--run_evaluation", "--output_name", "out/x", "pruning.ratio=0.25"]
    assert cli.main(argv) == 0
    assert seen["overrides"] == ["pruning.ratio=0.3", "calibration.seq_len=32", "calibration.num_samples=16",
                                 "model.name_or_path=embedded", "eval.run=all", "output.dir=out/x",
                                 "pruning.ratio=0.25"]
    recipe = load_recipe(TINY, seen["overrides"])
    assert (recipe.pruning.ratio, recipe.calibration.seq_len, recipe.output.dir) == (0.25, 32, "out/x")


@pytest.mark.parametrize("value, run", [("false", "none"), ("True", "all"), ("ppl", "ppl")])
def test_run_evaluation_values(value, run):
    args = cli.build_parser().parse_args(["run", TINY, "--run_evaluation", value])
    assert cli.original_flag_overrides(args) == [f"eval.run={run}"]


def test_an_unknown_option_of_run_says_how_recipe_keys_are_set(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["run", TINY, "--pruning.ratio", "0.3"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "usage: gradprune run" in err and "set recipe keys as key=value: pruning.ratio=" in err
    with pytest.raises(SystemExit):
        cli.main(["run", TINY, "--seq_len=3"])
    assert "--taylor_seq_len" in capsys.readouterr().err


@pytest.mark.parametrize("override, key", [
    ("taylor_seq_len=64", "calibration.seq_len=64"),
    ("taylor_num_samples=128", "calibration.num_samples=128"),
    ("pruning_ratio=0.2", "pruning.ratio=0.2"),
    ("base_model=x", "model.name_or_path=x"),
    ("output_name=o", "output.dir=o"),
])
def test_csv_column_names_as_override_keys_name_the_recipe_key(override, key):
    with pytest.raises(RecipeError, match="original tool's name") as exc:
        load_recipe(TINY, [override])
    assert key in str(exc.value)


def test_a_bare_section_field_names_its_section():
    with pytest.raises(RecipeError, match=r"seq_len: unknown key\. Did you mean 'calibration\.seq_len'\?"):
        load_recipe(TINY, ["seq_len=64"])


def test_search_and_validate_take_the_original_flags_and_config(monkeypatch):
    import gradprune.inspection
    import gradprune.search.command

    seen = {}
    monkeypatch.setattr(gradprune.search.command, "search_command",
                        lambda recipe, overrides, **kw: seen.update(search=(recipe, overrides, kw)) or 0)
    monkeypatch.setattr(gradprune.inspection, "validate_command",
                        lambda recipe, overrides, data=False: seen.update(validate=(recipe, overrides)) or 0)
    search = str(ROOT / "recipes/tiny_param_search.yaml")
    assert cli.main(["search", "--config", search, "--pruning_ratio", "0.2", "--output_name", "o",
                     "replicates=1"]) == 0
    recipe, overrides, _ = seen["search"]
    # a recipe key for every trial's base recipe; the output name is the search's folder
    assert recipe == search and overrides == ["pruning.ratio=0.2", "output_dir=o", "replicates=1"]
    assert cli.main(["validate", "--pruning_ratio", "0.3", f"--config={TINY}", "eval.run=none"]) == 0
    assert seen["validate"] == (TINY, ["pruning.ratio=0.3", "eval.run=none"])


@pytest.mark.parametrize("command", ["search", "validate"])
def test_an_unknown_option_of_search_or_validate_is_that_commands_usage(command, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main([command, TINY, "--pruning.ratio", "0.3"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert f"usage: gradprune {command}" in err and "set recipe keys as key=value: pruning.ratio=" in err
