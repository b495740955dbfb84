"""The plan format: JSON round trip, validation messages, uniformity."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from gradprune.errors import PlanError
from gradprune.pruning.plan import LayerPlan, Plan

CONFIG = SimpleNamespace(num_hidden_layers=3, num_key_value_heads=4, intermediate_size=10)


def _plan() -> Plan:
    return Plan(
        model_type="mistral",
        layers=[LayerPlan(0, [0, 2], [1, 3, 5]), LayerPlan(1, None, []), LayerPlan(2, [], None)],
        meta={"target_ratio": 0.2, "scope": "global", "nested": {"a": [1, 2]}},
    )


def test_round_trip_dict_and_file(tmp_path):
    plan = _plan()
    assert Plan.from_dict(plan.to_dict()) == plan
    assert Plan.from_dict(json.loads(json.dumps(plan.to_dict()))) == plan
    path = plan.save(tmp_path / "sub" / "plan.json")
    assert Plan.load(path) == plan
    assert [p.name for p in path.parent.iterdir()] == ["plan.json"]  # no temp file left


def test_save_is_atomic(tmp_path, monkeypatch):
    path = _plan().save(tmp_path / "plan.json")
    before = path.read_text()

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("gradprune.files.os.replace", boom)
    with pytest.raises(OSError, match="disk full"):
        Plan("llama", [], {}).save(path)
    assert path.read_text() == before
    assert [p.name for p in tmp_path.iterdir()] == ["plan.json"]


def test_save_rejects_non_json_meta(tmp_path):
    with pytest.raises(PlanError, match="not plain JSON"):
        Plan("llama", [], {"when": object()}).save(tmp_path / "plan.json")
    with pytest.raises(PlanError, match="not plain JSON"):
        Plan("llama", [], {"score": float("nan")}).save(tmp_path / "plan.json")
    assert not list(tmp_path.iterdir())


def test_minimal_dict_defaults():
    plan = Plan.from_dict({"model_type": "llama", "layers": [{"layer": 3}]})
    assert plan.layers == [LayerPlan(3, None, None)] and plan.meta == {}


@pytest.mark.parametrize(
    ("data", "match"),
    [
        ([], "plan: expected a JSON object, got list"),
        ({"model_type": "llama"}, r"plan.layers: expected a list"),
        ({"layers": []}, "plan.model_type: expected a non-empty string"),
        ({"model_type": "llama", "layers": [], "extra": 1}, r"unknown key\(s\) \['extra'\]"),
        ({"model_type": "llama", "layers": [], "meta": []}, "plan.meta: expected an object"),
        ({"model_type": "llama", "layers": [], "format_version": 9}, "format_version 9 is not supported"),
        ({"model_type": "llama", "layers": [3]}, r"plan.layers\[0\]: expected an object"),
        (
            {"model_type": "llama", "layers": [{"layer": -1}]},
            r"layers\[0\].layer: expected a non-negative int",
        ),
        (
            {"model_type": "llama", "layers": [{"layer": True}]},
            r"layers\[0\].layer: expected a non-negative int",
        ),
        ({"model_type": "llama", "layers": [{"layer": 0, "kept": []}]}, r"unknown key\(s\) \['kept'\]"),
        (
            {"model_type": "llama", "layers": [{"layer": 2, "mlp_kept": [3, 1]}]},
            r"layers\[0\] \(layer 2\).mlp_kept: indices must be sorted and unique",
        ),
        (
            {"model_type": "llama", "layers": [{"layer": 2, "attn_kept": [0, 1.5]}]},
            r"\(layer 2\).attn_kept: expected a list of ints or null",
        ),
        (
            {"model_type": "llama", "layers": [{"layer": 2, "attn_kept": "0,1"}]},
            r"\(layer 2\).attn_kept: expected a list of ints or null",
        ),
        ({"model_type": "llama", "layers": [{"layer": 1}, {"layer": 1}]}, "layer 1 appears more than once"),
    ],
)
def test_validation_messages(data, match):
    with pytest.raises(PlanError, match=match):
        Plan.from_dict(data)


def test_load_errors_name_the_file(tmp_path):
    with pytest.raises(PlanError, match="plan file .*missing.json' does not exist"):
        Plan.load(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(PlanError, match="bad.json' is not readable JSON"):
        Plan.load(bad)
    bad.write_text(json.dumps({"model_type": "llama", "layers": [{"layer": "x"}]}))
    with pytest.raises(PlanError, match=r"bad.json.layers\[0\].layer"):
        Plan.load(bad)


def test_kept_counts_and_uniformity():
    assert _plan().kept_counts(CONFIG) == [(2, 3), (4, 0), (0, 10)]
    assert not _plan().is_uniform(CONFIG)
    assert Plan("llama", [], {}).is_uniform(CONFIG)  # nothing pruned
    uniform = Plan("llama", [LayerPlan(i, [1, 3], [0, 4, 9]) for i in range(3)], {})
    assert uniform.is_uniform(CONFIG)
    # a layer left out keeps everything, so this is not uniform
    assert not Plan("llama", uniform.layers[:2], {}).is_uniform(CONFIG)
    # None and the full list mean the same
    assert Plan("llama", [LayerPlan(0, [0, 1, 2, 3], None)], {}).is_uniform(CONFIG)
