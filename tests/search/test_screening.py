"""Predictor screening: the initial design, the selection (top_k + coverage), marked rows, end to end."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import yaml

from gradprune.cli import main
from gradprune.search.optuna_store import study_system_attrs
from gradprune.search.screening import (
    SELECTION_ATTR,
    Screening,
    farthest_first,
    grid_points,
    initial_design,
    point_key,
    screen_rows,
)
from tests.eval.conftest import FIXTURE_TASKS

SPACE = {"calibration.seq_len": [8, 16, 32], "calibration.num_samples": [4, 8, 12]}


def test_initial_design_spreads_over_the_grid_and_is_deterministic():
    assert initial_design(SPACE, 4) == [0, 2, 6, 8]  # the four corners of the 3 × 3 grid
    assert initial_design(SPACE, 5) == [0, 2, 4, 6, 8]  # then the centre
    assert initial_design(SPACE, 1) == [0] and len(initial_design(SPACE, 20)) == 9


def test_farthest_first_picks_the_point_farthest_from_everything_chosen():
    X = np.array([[0.0], [1.0], [0.4], [0.6], [3.0]])
    assert farthest_first(X, [0], [1, 2, 3, 4], 2) == [4, 1]  # 3.0 first, then 1.0 (1 from 0.0)
    assert farthest_first(X, [0], [1, 2, 3, 4], 3) == [4, 1, 2]  # 0.4 and 0.6 tie at 0.4: the earlier one
    assert farthest_first(X, [0, 4], [1, 2], 5) == [1, 2]


@pytest.fixture
def screen_search(write_search):
    """The shared search recipe writer, evaluating the fixture tasks zero-shot in screen mode."""
    evaluation = ("eval.run=zeroshot", "eval.tasks=[piqa]", f"eval.task_dir={FIXTURE_TASKS}",
                  "eval.dense=false", "eval.batch_size=4")
    return lambda grid, **extra: write_search(grid, extra_overrides=evaluation, evaluation="screen", **extra)


def _add(study, point, role, metrics, state="COMPLETE", value=None):
    from optuna.distributions import CategoricalDistribution
    from optuna.trial import TrialState, create_trial

    dists = {k: CategoricalDistribution(SPACE[k]) for k in point}
    study.add_trial(create_trial(
        state=getattr(TrialState, state), value=value, params=point, distributions=dists,
        user_attrs={"success": True, "metrics": metrics, "extra": {"screen_role": role}, "error": "",
                    "status": "complete" if role != "screened" else "screened", "evaluated": role != "screened"}))


def _phase1(tmp_path, screen_search, n_initial=4, top_k=2, coverage=1):
    import optuna

    from gradprune.search.spec import load_search_spec

    spec = load_search_spec(screen_search(SPACE, screen={"n_initial": n_initial, "top_k": top_k,
                                                          "coverage": coverage}))
    study = optuna.create_study(direction="maximize")
    scr = Screening(spec, study, SPACE, tmp_path)
    ratios = {}
    for i, p in enumerate(grid_points(SPACE)):
        g = 1.0 + 0.25 * i  # a gradient statistic; the accuracy is a line in it (the model finds it)
        ratios[point_key(p)] = g
        m = {"grad_norm_ratio": g, "grad_std_ratio": (i * 7) % 5 + 0.5, "grad_mean_ratio": None}
        if scr.role(p) == "initial":
            _add(study, p, "initial", {**m, "acc_mean": 0.9 - 0.1 * g}, value=0.9 - 0.1 * g)
        else:
            _add(study, p, "screened", m, state="PRUNED")
    return spec, study, scr, ratios


def test_selection_evaluates_exactly_top_k_plus_coverage_best_predicted_first(tmp_path, screen_search):
    spec, study, scr, ratios = _phase1(tmp_path, screen_search)
    assert len(scr.initial) == 4
    assert scr.next_phase() is True  # phase 1 done: the selection is made and enqueued
    sel = study_system_attrs(study)[SELECTION_ATTR]
    assert json.loads((tmp_path / "screen_selection.json").read_text()) == sel
    assert sorted(sel["selected"].values()) == ["coverage", "top_k", "top_k"]
    screened = [k for k in ratios if k not in scr.initial]
    assert set(sel["predicted"]) == set(screened)  # every screened trial has a prediction
    for k in screened:
        assert sel["predicted"][k] == pytest.approx(0.9 - 0.1 * ratios[k], abs=1e-9)
    best_two = sorted(screened, key=lambda k: ratios[k])[:2]  # accuracy falls with the statistic
    assert {k for k, r in sel["selected"].items() if r == "top_k"} == set(best_two)
    assert "grad_mean_ratio" not in sel["features"] and "grad_norm_ratio" in sel["model"]["features"]
    from optuna.trial import TrialState

    waiting = study.get_trials(states=(TrialState.WAITING,))
    assert sorted(json.dumps(t.system_attrs["fixed_params"], sort_keys=True) for t in waiting) == sorted(sel["selected"])
    assert scr.next_phase() is False  # made once
    for key, role in sel["selected"].items():
        assert scr.role(json.loads(key)) == role


def test_screened_and_evaluated_rows_are_marked_and_one_row_per_point(tmp_path, screen_search):
    from gradprune.search.table import trial_rows

    spec, study, scr, ratios = _phase1(tmp_path, screen_search)
    scr.next_phase()
    sel = study_system_attrs(study)[SELECTION_ATTR]
    for key, role in sel["selected"].items():  # phase 2 ran: the selected points evaluated in full
        _add(study, json.loads(key), role, {"acc_mean": 0.5, "grad_norm_ratio": ratios[key]}, value=0.5)
    rows = pd.DataFrame(screen_rows(study, spec, trial_rows(study, spec)))
    assert len(rows) == 9 and rows.config_id.is_unique
    assert (rows.evaluated.sum(), (~rows.evaluated).sum()) == (7, 2)
    left = rows[~rows.evaluated]
    assert (left.status == "screened").all() and left.acc_mean.isna().all() and left.acc_mean_predicted.notna().all()
    picked = rows[rows.screen_role.isin(["top_k", "coverage"])]
    assert len(picked) == 3 and picked.acc_mean.notna().all() and picked.acc_mean_predicted.notna().all()
    assert rows[rows.screen_role == "initial"].acc_mean_predicted.isna().all()


def test_without_a_model_every_pick_is_made_for_coverage(tmp_path, screen_search):
    spec, study, scr, _ = _phase1(tmp_path, screen_search, n_initial=2, top_k=2, coverage=1)
    scr.next_phase()  # two evaluated rows are too few for the analysis' predictors (it needs four)
    sel = study_system_attrs(study)[SELECTION_ATTR]
    assert "error" in sel["model"] and sel["predicted"] == {}
    assert sorted(sel["selected"].values()) == ["coverage"] * 3  # still n_initial + top_k + coverage in all


def test_screen_search_evaluates_exactly_n_initial_plus_top_k_plus_coverage(screen_search, tmp_path):
    path = screen_search({"calibration.seq_len": [8, 16, 32], "pruning.ratio": [0.1, 0.2, 0.3]},
                         screen={"n_initial": 4, "top_k": 2, "coverage": 1})
    assert main(["search", str(path)]) == 0
    csv = tmp_path / "search/search_results.csv"
    df = pd.read_csv(csv)
    assert len(df) == 9 and not df.duplicated(["calibration.seq_len", "pruning.ratio"]).any()
    assert df.evaluated.sum() == 4 + 2 + 1 and df.success.all()
    roles = df.screen_role.value_counts().to_dict()
    assert roles.pop("initial") == 4 and roles.pop("screened") == 2 and sum(roles.values()) == 3
    assert set(roles) <= {"top_k", "coverage"}
    left = df[~df.evaluated]
    assert (left.status == "screened").all() and left.acc_mean.isna().all() and left.acc_piqa.isna().all()
    assert df[df.evaluated].acc_mean.notna().all()
    runs = [json.loads(p.read_text()) for p in (tmp_path / "search/trials").glob("*/run.json")]
    assert sum(r["recipe"]["eval"]["run"] == "zeroshot" for r in runs) == 7  # lm-eval ran 7 times, no more
    before = csv.read_text()
    assert main(["search", str(path)]) == 0  # resume: nothing left, the same CSV
    assert csv.read_text() == before


@pytest.mark.parametrize(("extra", "fragment"), [
    ({"sampler": "random", "n_trials": 2}, "needs sampler: grid"),
    ({"overrides_add": ["eval.run=none"]}, "needs zero-shot tasks"),
])
def test_screen_needs_a_grid_and_zero_shot_tasks(screen_search, capsys, extra, fragment):
    path = screen_search({"pruning.ratio": [0.1, 0.2]})
    spec = yaml.safe_load(path.read_text())
    spec["overrides"] += extra.pop("overrides_add", [])
    spec.update(extra)
    path.write_text(yaml.safe_dump(spec))
    assert main(["search", str(path)]) == 2
    assert fragment in " ".join(capsys.readouterr().err.split())
