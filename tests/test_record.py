"""The record stage: the per-layer rows (counted as surgery cuts), extreme layers, the original tool's
setting names, the layers.csv columns and the output-dir guard."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest

from gradprune.cut.surgery import apply_plan
from gradprune.errors import GradpruneError
from gradprune.models.adapters import get_adapter
from gradprune.original_names import ORIGINAL_KEYS, ORIGINAL_SETTINGS, setting_columns
from gradprune.pruning.plan import LayerPlan, Plan
from gradprune.recipe import load_recipe
from gradprune.record import (
    LAYER_COLUMNS,
    check_output_dir,
    layer_rows,
    layers_csv_text,
    original_settings,
)
from tests.conftest import make_model

TINY = str(Path(__file__).resolve().parents[1] / "recipes/tiny.yaml")


@pytest.fixture
def cut():
    """A 3-layer model, a plan (layer 0 untouched, layer 1 cut hard, layer 2 lightly), and its layers."""
    model = make_model("mistral", num_hidden_layers=3)
    layers = get_adapter(model).layers(model)
    n = layers[0].n_channels
    plan = Plan(model_type="mistral", layers=[
        LayerPlan(0), LayerPlan(1, attn_kept=[1], mlp_kept=list(range(n // 8))),
        LayerPlan(2, mlp_kept=list(range(n - 4)))])
    return model, layers, plan


def test_rows_count_what_surgery_removes(cut):
    model, layers, plan = cut
    adapter = get_adapter(model)
    before = adapter.count_params(model)
    rows = layer_rows(layers, plan, {"grad_norm": [1.0, 2.0, 3.0]}, threshold=0.5)
    apply_plan(model, plan)
    assert sum(r["params_before"] - r["params_after"] for r in rows) == before - adapter.count_params(model)
    assert [r["kv_groups_kept"] for r in rows] == [2, 1, 2] and [r["attn_pruned"] for r in rows] == [False, True, False]
    assert rows[0]["pruning_rate"] == 0.0 and [r["grad_norm"] for r in rows] == [1.0, 2.0, 3.0]
    assert list(rows[0])[: len(LAYER_COLUMNS)] == LAYER_COLUMNS


def test_extreme_is_strictly_above_the_threshold(cut):
    _, layers, plan = cut
    rate = layer_rows(layers, plan, {}, threshold=0.5)[1]["pruning_rate"]
    assert [r["extreme"] for r in layer_rows(layers, plan, {}, threshold=0.5)] == [False, True, False]
    assert not any(r["extreme"] for r in layer_rows(layers, plan, {}, threshold=rate))


def test_layers_csv_has_the_fixed_columns_then_the_statistics(cut):
    _, layers, plan = cut
    rows = layer_rows(layers, plan, {"grad_norm": [1.0, None, 3.0]}, threshold=0.8)
    table = list(csv.DictReader(io.StringIO(layers_csv_text(rows, ["grad_norm"]))))
    assert list(table[0]) == [*LAYER_COLUMNS, "grad_norm"] and table[1]["grad_norm"] == ""


def test_original_setting_names_carry_the_recipe_values():
    recipe = load_recipe(TINY, ["calibration.seq_len=24", "calibration.num_samples=12"])
    assert original_settings(recipe) == {"taylor_seq_len": 24, "taylor_num_samples": 12}
    assert list(ORIGINAL_SETTINGS) == ["taylor_seq_len", "taylor_num_samples"]  # DESIGN.md's CSV columns
    assert set(ORIGINAL_SETTINGS.items()) <= set(ORIGINAL_KEYS.items())  # a recorded name is also a flag
    assert setting_columns("calibration.seq_len") == ("taylor_seq_len", "calibration.seq_len")
    assert setting_columns("pruning.ratio") == ("pruning.ratio",)  # its CSV column is the ratio achieved


def test_output_dir_with_results_is_refused_unless_overwrite(tmp_path):
    assert check_output_dir(tmp_path / "new", overwrite=False) == tmp_path / "new"
    (tmp_path / "layers.csv").write_text("")
    with pytest.raises(GradpruneError, match=r"already holds results \(layers.csv\).*--overwrite"):
        check_output_dir(tmp_path, overwrite=False)
    assert check_output_dir(tmp_path, overwrite=True) == tmp_path
    with pytest.raises(GradpruneError, match="is a file"):
        check_output_dir(tmp_path / "layers.csv", overwrite=True)


def test_what_write_output_reads_is_a_field_of_every_run_output():
    import dataclasses

    from gradprune.record import RunFiles
    from gradprune.run import RunOutput

    fields = {f.name for f in dataclasses.fields(RunOutput)}
    assert set(RunFiles.__annotations__) <= fields, set(RunFiles.__annotations__) - fields
    assert isinstance(RunOutput({}, [], [], None, {}), RunFiles)
