"""Successive halving: nested deterministic subsets, per-example reuse, the stderr rule, pruned rows."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest
import yaml

from gradprune.cli import main
from gradprune.search.halving import (
    RUNGS_ATTR,
    StderrHalvingPruner,
    acc_mean_stderr,
    decision_stderr,
    evaluate_in_rungs,
    example_order,
    promoted,
    rung_fractions,
    rung_metrics,
    rung_subsets,
)
from gradprune.search.optuna_store import (
    set_study_system_attr,
    set_trial_state,
    set_trial_user_attr,
    stored_trial,
    trial_id_of,
)
from tests.eval.conftest import FIXTURE_TASKS, build_model, build_tokenizer, fixture_text


def test_rung_fractions_are_powers_of_one_over_eta_down_to_min_fraction():
    assert rung_fractions(0.125, 2) == [0.125, 0.25, 0.5, 1.0]
    assert rung_fractions(0.1, 3) == pytest.approx([1 / 9, 1 / 3, 1.0])
    assert rung_fractions(1.0, 2) == [1.0]
    assert rung_fractions(0.3, 2) == [0.5, 1.0]


def test_subsets_are_nested_deterministic_prefixes_of_one_permutation():
    sizes = {"tiny_piqa": 100, "tiny_boolq": 37}
    fr = rung_fractions(0.125, 2)
    a, b = rung_subsets(sizes, fr, seed=0), rung_subsets(sizes, fr, seed=0)
    assert a == b  # the same for every trial (a trial is a call with the same arguments)
    for task, n in sizes.items():
        order = example_order(task, n, 0)
        assert sorted(order) == list(range(n))
        for r, f in enumerate(fr):
            assert a[r][task] == order[: math.ceil(f * n)]  # a prefix: rung r ⊂ rung r+1
        assert a[-1][task] == order
    assert [len(s["tiny_boolq"]) for s in a] == [5, 10, 19, 37]
    assert rung_subsets(sizes, fr, seed=1) != a
    # independent of the process (no hash() randomisation): a fixed value of the permutation
    assert example_order("tiny_piqa", 10, 0) == example_order("tiny_piqa", 10, 0)
    assert example_order("a", 8, 0) != example_order("b", 8, 0)


def test_rung_subsets_are_identical_across_processes():
    import subprocess
    import sys

    code = "from gradprune.search.halving import example_order; print(example_order('tiny_arc', 50, 3))"
    outs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           env={"PYTHONHASHSEED": str(s), "PATH": ""}).stdout for s in (1, 2)}
    assert len(outs) == 1 and outs.pop().strip() == str(example_order("tiny_arc", 50, 3))


def _fake_scores(task: str, i: int) -> dict[str, float]:
    return {"acc": float((i * 7 + len(task)) % 3 == 0), "acc_norm": float(i % 2)}


def test_each_rung_evaluates_only_new_examples_and_reuses_the_previous_ones():
    sizes = {"t1": 40, "t2": 24}
    fr = rung_fractions(0.125, 2)
    subsets = rung_subsets(sizes, fr, seed=0)
    calls: list[dict[str, list[int]]] = []

    def fake_eval(model, tok, cfg, indices):
        calls.append({t: list(ix) for t, ix in indices.items()})
        return {t: {i: _fake_scores(t, i) for i in ix} for t, ix in indices.items()}

    reports = []
    out = evaluate_in_rungs(None, None, None, subsets, fr, lambda *a: reports.append(a) or False, fake_eval)
    assert len(calls) == 4 and not out.stopped
    for task, n in sizes.items():
        asked = [i for c in calls for i in c.get(task, [])]
        assert sorted(asked) == list(range(n))  # every example exactly once over all rungs
        for r in range(1, 4):
            assert set(calls[r][task]) == set(subsets[r][task]) - set(subsets[r - 1][task])
    assert [rec["new_examples"] for rec in out.rungs] == [8, 8, 16, 32]
    full = {t: {i: _fake_scores(t, i) for i in range(n)} for t, n in sizes.items()}
    from gradprune.eval.zeroshot import aggregate_examples

    assert out.metrics == aggregate_examples(full, list(sizes))
    assert [r[0] for r in reports] == [0, 1, 2, 3] and reports[-1][4] is True  # final flag on the last rung
    m = rung_metrics(out)
    assert m["eval_fraction"] == 1.0 and m["examples_evaluated"] == 64 and "acc_mean_at_fraction" not in m


def test_a_stopped_trial_keeps_only_the_fraction_metrics():
    fr = rung_fractions(0.25, 2)
    subsets = rung_subsets({"t": 16}, fr, seed=0)
    fake = lambda m, t, c, ix: {k: {i: _fake_scores(k, i) for i in v} for k, v in ix.items()}  # noqa: E731
    out = evaluate_in_rungs(None, None, None, subsets, fr, lambda r, *a: r == 1, fake)
    assert out.stopped and len(out.rungs) == 2 and out.scored == {"t": 8}
    m = rung_metrics(out)
    assert m["eval_fraction"] == 0.5 and m["examples_evaluated"] == 8
    assert "acc_mean" not in m and "acc_t" not in m
    assert m["acc_mean_at_fraction"] == out.rungs[-1]["acc_mean"]


def test_acc_mean_stderr_is_lm_eval_stderr_per_task_combined():
    per = {"a": {i: {"acc": float(i < 3)} for i in range(10)}, "b": {i: {"acc": float(i < 5)} for i in range(5)}}
    se_a = math.sqrt(0.3 * 0.7 / 9)
    assert acc_mean_stderr(per, ["a", "b"]) == pytest.approx(math.sqrt(se_a**2 + 0.0) / 2)


def test_decision_stderr_is_the_finite_population_stderr_of_the_full_set_accuracy():
    per = {"a": {i: {"acc": float(i < 3)} for i in range(10)}, "b": {i: {"acc": float(i < 2)} for i in range(4)}}
    sizes = {"a": 40, "b": 4}  # b is complete: its accuracy on all examples is known, no error left
    se_a = math.sqrt(0.3 * 0.7 / 9 * (40 - 10) / (40 - 1))
    assert decision_stderr(per, sizes, ["a", "b"]) == pytest.approx(se_a / 2)
    assert decision_stderr(per, {"a": 10, "b": 4}, ["a", "b"]) == 0.0
    assert decision_stderr(per, {"a": 10**9, "b": 10**9}, ["a", "b"]) == pytest.approx(
        acc_mean_stderr(per, ["a", "b"]), rel=1e-6)


def test_synchronous_promotion_keeps_the_best_and_those_within_k_stderr_in_any_order():
    import itertools

    values = {"a": 0.80, "b": 0.60, "c": 0.70, "d": 0.66, "e": 0.64}
    ses = {"a": 0.0, "b": 0.05, "c": 0.0, "d": 0.05, "e": 0.05}
    # 5 points, η = 2: the best two (0.80, 0.70) survive; 0.66 + 0.05 ≥ 0.70 is within 1 se; 0.64 is not
    for perm in itertools.permutations(values):
        got = promoted({k: values[k] for k in perm}, ses, 2, 1.0)
        assert got == {"a", "c", "d"}
    assert promoted(values, ses, 2, 0.0) == {"a", "c"}  # k = 0: plain successive halving
    assert promoted(values, ses, 2, 1.5) == {"a", "c", "d", "e"}  # 0.64 + 0.075 ≥ 0.70; 0.60 + 0.075 is not
    assert promoted({"a": 0.5, "b": 0.7}, {"a": 1.0, "b": 0.0}, 3, 1.0) == {"b"}  # n < η: the best only


# --- the real lm-eval: per-example results of a subset equal those of the full run; merged = full ---


@pytest.fixture(scope="module")
def lm_setup():
    import os

    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    tok = build_tokenizer(fixture_text())
    return build_model(len(tok)), tok


def test_rungs_with_lm_eval_match_a_full_evaluation(lm_setup):
    import torch

    from gradprune.eval import evaluate
    from gradprune.eval.evaluation import evaluate_examples
    from gradprune.recipe import EvalSection

    torch.set_num_threads(1)
    model, tok = lm_setup
    cfg = EvalSection(run="zeroshot", tasks=["piqa", "hellaswag", "winogrande"], task_dir=str(FIXTURE_TASKS),
                      batch_size=4)
    full = evaluate(model, tok, cfg).metrics
    every = evaluate_examples(model, tok, cfg, {t: list(range(12)) for t in cfg.tasks})
    some = evaluate_examples(model, tok, cfg, {"piqa": [9, 2, 5], "hellaswag": [11, 0], "winogrande": []})
    assert set(some) == {"piqa", "hellaswag"}  # a task without indices is not run (lm-eval would run all)
    for t, rows in some.items():
        assert rows == {i: every[t][i] for i in rows}  # doc index i means example i in any call
    fr = rung_fractions(0.25, 2)
    out = evaluate_in_rungs(model, tok, cfg, rung_subsets({t: 12 for t in cfg.tasks}, fr, 0), fr,
                            lambda *a: False)
    for key, value in full.items():
        assert out.metrics[key] == pytest.approx(value, abs=1e-12), key


# --- the pruner ---


def _study(values_per_trial, stderrs=None, eta=2, k=1.0):
    import optuna
    from optuna.distributions import FloatDistribution
    from optuna.trial import TrialState, create_trial

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", pruner=StderrHalvingPruner(eta, k))
    for i, v in enumerate(values_per_trial):
        se = (stderrs or [0.0] * len(values_per_trial))[i]
        study.add_trial(create_trial(state=TrialState.PRUNED, params={"x": float(i)},
                                     distributions={"x": FloatDistribution(0, 100)}, intermediate_values={0: v},
                                     user_attrs={RUNGS_ATTR: [{"rung": 0, "stderr": se}]}))
    return study


def _decide(study, value, stderr):
    trial = study.ask()
    trial.set_user_attr(RUNGS_ATTR, [{"rung": 0, "stderr": stderr}])
    trial.report(value, 0)
    return trial.should_prune()


def test_first_trials_are_never_pruned_for_lack_of_comparison():
    assert not _decide(_study([]), 0.0, 0.0)  # alone at its rung: n < η
    assert not _decide(_study([0.9, 0.9], eta=4), 0.1, 0.0)  # 3 < η = 4


def test_clearly_worse_trial_is_pruned_but_not_one_within_k_stderr():
    # survivors of {0.80, 0.60, 0.70, v} with η = 2: the best two; the worst survivor is 0.70
    assert _decide(_study([0.80, 0.60, 0.70]), 0.64, 0.05)  # 0.64 + 0.05 < 0.70
    assert not _decide(_study([0.80, 0.60, 0.70]), 0.66, 0.05)  # 0.66 + 0.05 ≥ 0.70: within 1 se
    assert _decide(_study([0.80, 0.60, 0.70], k=0.0), 0.69, 0.05)  # k = 0: plain successive halving
    assert not _decide(_study([0.80, 0.60, 0.70], k=2.0), 0.62, 0.05)  # within 2 se
    assert not _decide(_study([0.80, 0.60, 0.70]), 0.75, 0.0)  # a survivor itself


def test_retried_trials_do_not_count_as_competitors():
    from optuna.trial import TrialState

    study = _study([0.9])
    old = study.ask()
    old.report(0.95, 0)
    set_trial_user_attr(study, trial_id_of(old), "retried", True)
    study.tell(old, state=TrialState.FAIL)
    # competitors: 0.9 and this trial only (the failed, retried one is left out): 1 survivor = 0.9
    assert _decide(study, 0.5, 0.1)
    assert not _decide(_study([0.9]), 0.85, 0.1)


# --- end to end: a halving search on the tiny test model ---


@pytest.fixture
def halving_search(write_search):
    """The shared search recipe writer, evaluating the fixture tasks zero-shot in halving mode."""
    evaluation = ("eval.run=zeroshot", "eval.tasks=[piqa, winogrande]", f"eval.task_dir={FIXTURE_TASKS}",
                  "eval.dense=false", "eval.batch_size=4")
    return lambda grid, extra_overrides=(), **extra: write_search(grid, extra_overrides=evaluation + extra_overrides,
                                                                  evaluation="halving", **extra)


@pytest.fixture
def by_size(monkeypatch, model_dir):
    """lm-eval replaced by a stand-in: every example right when little was pruned (> 85 % of the
    parameters kept), wrong otherwise; returns the list of the index sets it was asked for."""
    from transformers import AutoModelForCausalLM

    import gradprune.eval as geval

    dense = sum(p.numel() for p in AutoModelForCausalLM.from_pretrained(model_dir).parameters())
    calls: list[dict[str, list[int]]] = []

    def evaluate(model, tok, cfg, indices):
        calls.append({t: list(ix) for t, ix in indices.items()})
        right = sum(p.numel() for p in model.parameters()) / dense > 0.85
        return {t: {i: {"acc": float(right)} for i in ix} for t, ix in indices.items()}

    monkeypatch.setattr(geval, "evaluate_examples", evaluate)
    return calls


@pytest.mark.parametrize(("schedule", "ratios"), [
    ("async", [0.1, 0.4, 0.6]),
    ("sync", [0.1, 0.4, 0.6]),
    ("sync", [0.6, 0.4, 0.1]),  # the best point last: synchronous decisions do not depend on the order
])
def test_halving_search_prunes_clearly_worse_trials_and_marks_their_rows(halving_search, tmp_path, by_size,
                                                                         schedule, ratios):
    from gradprune.errors import GradpruneError

    calls = by_size
    path = halving_search({"pruning.ratio": ratios},
                          halving={"min_fraction": 0.25, "reduction_factor": 2, "k_stderr": 0.0, "schedule": schedule})
    assert main(["search", str(path)]) == 0
    df = pd.read_csv(tmp_path / "search/search_results.csv").sort_values("pruning.ratio")
    assert list(df.status) == ["complete", "pruned", "pruned"]
    assert list(df.evaluated) == [True, False, False] and df.success.all()
    best, worse = df.iloc[0], df.iloc[1:]
    assert best.eval_fraction == 1.0 and best.acc_mean == 1.0 and best.examples_evaluated == 24
    assert worse.acc_mean.isna().all() and worse.eval_fraction.tolist() == [0.25, 0.25]
    assert (worse.acc_mean_at_fraction == 0.0).all() and (worse.examples_evaluated == 6).all()
    assert worse.acc_piqa.isna().all()
    # every trial saw the same subsets: the first rung's indices are identical across trials
    assert len(calls) == 3 + 2  # the complete point: rungs 1/4, 1/2, 1; the pruned ones: 1/4 only
    # every trial saw the same first rung; later rungs scored only examples not scored before
    firsts = [calls[0], calls[3], calls[4]] if schedule == "async" else calls[:3]
    assert firsts[0] == firsts[1] == firsts[2] and sum(map(len, calls[0].values())) == 6
    later = [calls[1], calls[2]] if schedule == "async" else calls[3:]
    for t in calls[0]:
        seen = calls[0][t] + later[0][t] + later[1][t]
        assert len(seen) == len(set(seen)) == 12
    if schedule == "sync":  # one row per point; the promoted point's paused rows are superseded
        assert len(df) == 3 and best.halving_rung == 2 and list(worse.halving_rung) == [0, 0]
        decisions = json.loads((tmp_path / "search/halving_decisions.json").read_text())
        assert [len(decisions[r]["promoted"]) for r in ("0", "1")] == [1, 1]
    # the analysis treats pruned rows as not evaluated
    from gradprune.analysis.loading import load_search_rows

    with pytest.raises(GradpruneError, match="2 pruned but not evaluated"):
        load_search_rows(tmp_path / "search/search_results.csv", "acc_mean")


def test_sync_halving_stopped_between_rungs_resumes_to_the_same_outcome(halving_search, tmp_path, by_size):
    path = halving_search({"pruning.ratio": [0.1, 0.4, 0.6]}, halving={"min_fraction": 0.25, "k_stderr": 0.0})
    csv = tmp_path / "search/search_results.csv"
    assert main(["search", str(path), "--n_trials", "2"]) == 0  # two of three points at rung 0
    assert list(pd.read_csv(csv).status) == ["paused", "paused"]
    assert main(["search", str(path), "--n_trials", "2"]) == 0  # the third; decision; rung 1 of the best
    assert sorted(pd.read_csv(csv).status) == ["paused", "pruned", "pruned"]
    assert main(["search", str(path)]) == 0
    df = pd.read_csv(csv).sort_values("pruning.ratio")
    assert list(df.status) == ["complete", "pruned", "pruned"] and list(df.halving_rung) == [2, 0, 0]
    assert sum(sum(map(len, c.values())) for c in by_size) == 24 + 2 * 6  # every example scored once


@pytest.mark.slow
def test_two_workers_share_a_synchronous_halving_search(halving_search, tmp_path):
    import os
    import subprocess
    import sys

    path = halving_search({"pruning.ratio": [0.1, 0.2, 0.3, 0.4]},
                          halving={"min_fraction": 0.25, "reduction_factor": 2, "k_stderr": 0.0})
    cmd = [sys.executable, "-m", "gradprune.cli", "search", str(path)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    ps = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in ps]
    assert [p.returncode for p in ps] == [0, 0], outs
    df = pd.read_csv(tmp_path / "search/search_results.csv")
    assert sorted(df["pruning.ratio"]) == [0.1, 0.2, 0.3, 0.4] and df.success.all()  # one row per point
    decisions = json.loads((tmp_path / "search/halving_decisions.json").read_text())
    assert [len(decisions[r]["values"]) for r in ("0", "1")] == [4, len(decisions["0"]["promoted"])]
    promotions = sum(len(d["promoted"]) for d in decisions.values())
    ran = [int(o[0].split("this worker ran ")[1].split(" ")[0]) for o in outs]
    assert sum(ran) == 4 + promotions  # every (point, rung) ran once, across both workers
    assert (df.status == "complete").sum() == len(decisions["1"]["promoted"])
    runs = [json.loads(p.read_text())["eval"]["zeroshot"] for p in (tmp_path / "search/trials").glob("*/run.json")]
    assert sum(z["n_new"] for z in runs) == df.examples_evaluated.sum()  # no example scored twice


def test_sync_halving_computes_perplexity_once_per_point(halving_search, tmp_path, by_size, monkeypatch):
    import gradprune.eval as geval
    from gradprune.eval import EvalResult

    ppl_calls = []

    def fake_ppl(model, tok, cfg, console=None):  # the perplexity pass of eval.run=all
        assert cfg.run == "ppl"
        ppl_calls.append(sum(p.numel() for p in model.parameters()))
        return EvalResult(metrics={"ppl": float(len(ppl_calls))}, info={"run": "ppl", "seconds": {"ppl": 0.0}})

    monkeypatch.setattr(geval, "evaluate", fake_ppl)
    path = halving_search({"pruning.ratio": [0.1, 0.4]}, halving={"min_fraction": 0.25, "k_stderr": 0.0},
                          extra_overrides=("eval.run=all",))
    spec = yaml.safe_load(path.read_text())
    assert "eval.run=all" in spec["overrides"]
    assert main(["search", str(path)]) == 0
    df = pd.read_csv(tmp_path / "search/search_results.csv").sort_values("pruning.ratio")
    assert list(df.status) == ["complete", "pruned"]
    assert len(ppl_calls) == 2  # one per point, not one per rung (the complete point ran three trials)
    assert list(df.ppl) == [1.0, 2.0]  # the complete row carries its first trial's perplexity


def test_a_requeued_trial_keeps_the_rung_it_was_enqueued_for():
    import optuna
    from optuna.trial import TrialState

    from gradprune.search.study import claim_waiting, requeue, trial_params

    study = optuna.create_study()
    study.enqueue_trial({"x": 1.0}, user_attrs={"halving_rung": 2})
    tid = claim_waiting(study)
    requeue(study, stored_trial(study, tid))
    (again,) = study.get_trials(states=(TrialState.WAITING,))
    assert again.user_attrs == {"halving_rung": 2} and trial_params(again) == {"x": 1.0}


def test_halving_with_the_real_lm_eval_keeps_a_noisy_trial(halving_search, tmp_path):
    # 12 examples per task: at a quarter of them the stderr (≈ 0.2) covers any difference between two
    # random-weight pruned models, so with k = 1 nothing is pruned and both end with full metrics
    path = halving_search({"pruning.ratio": [0.1, 0.2]}, halving={"min_fraction": 0.25, "k_stderr": 1.0})
    assert main(["search", str(path)]) == 0
    df = pd.read_csv(tmp_path / "search/search_results.csv")
    assert list(df.status) == ["complete", "complete"] and df.evaluated.all()
    assert (df.eval_fraction == 1.0).all() and df.acc_mean.notna().all() and df.acc_piqa.notna().all()
    assert (df.examples_evaluated == 24).all()


@pytest.mark.parametrize(("extra", "fragment"), [
    ({"overrides": ["eval.run=ppl"]}, "needs zero-shot tasks"),
    ({"objective": "ppl"}, "works on objective acc_mean"),
    ({"sampler": "tpe", "n_trials": 2, "halving": {"schedule": "sync"}}, "halving.schedule: sync needs sampler: grid"),
])
def test_halving_needs_zero_shot_accuracy(halving_search, capsys, extra, fragment):
    path = halving_search({"pruning.ratio": [0.1]})
    spec = yaml.safe_load(path.read_text())
    if "overrides" in extra:
        spec["overrides"] = spec["overrides"] + extra.pop("overrides")
    spec.update(extra)
    path.write_text(yaml.safe_dump(spec))
    assert main(["search", str(path)]) == 2
    assert fragment in " ".join(capsys.readouterr().err.split())


# --- synchronous halving's bookkeeping, on a real study with stored rung results ---


def _sync_setup(tmp_path, values: dict[float, float], eta=2, k=0.0):
    """A study whose points x (params {"x": x}) each finished rung 0 with the given value (stderr 0.01)."""
    from types import SimpleNamespace

    import optuna

    from gradprune.search.halving import SyncHalving

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize")
    spec = SimpleNamespace(halving=SimpleNamespace(reduction_factor=eta, k_stderr=k))
    sync = SyncHalving(spec, study, tmp_path, n_rungs=3)
    for x, v in values.items():
        _finish(study, sync, x, 0, v)
    return study, sync


def _finish(study, sync, x: float, rung: int, value: float) -> None:
    """A finished, successful trial of point x at ``rung`` with its stored rung record."""
    from optuna.distributions import FloatDistribution
    from optuna.trial import TrialState, create_trial

    from gradprune.search.study import point_key

    key = point_key({"x": x})
    _, rungs, _ = sync.examples.load(key)
    rungs = [*rungs, {"rung": rung, "acc_mean": value, "decision_stderr": 0.01}]
    sync.examples.save(key, {}, rungs, {})
    study.add_trial(create_trial(state=TrialState.PRUNED, params={"x": x},
                                 distributions={"x": FloatDistribution(0, 100)},
                                 user_attrs={"halving_rung": rung, "success": True, "status": "paused"}))


def _waiting(study):
    from optuna.trial import TrialState

    from gradprune.search.halving import trial_rung

    return sorted((t.system_attrs["fixed_params"]["x"], trial_rung(t))
                  for t in study.get_trials(states=(TrialState.WAITING,)))


def test_a_rung_is_decided_once_and_a_late_point_against_its_stored_cut(tmp_path):
    from optuna.trial import TrialState

    study, sync = _sync_setup(tmp_path, {1.0: 0.9, 2.0: 0.5, 3.0: 0.7, 4.0: 0.4})
    assert sync.next_phase()
    assert _waiting(study) == [(1.0, 1), (3.0, 1)]  # the best ⌊4/2⌋
    d = sync.decisions()["0"]
    assert d["cut"] == 0.7 and len(d["values"]) == 4
    # a fifth point finishes rung 0 after the decision (its trial was re-run after a worker died):
    # it is compared with the stored cut, not with a new ranking that would change the others' fate
    _finish(study, sync, 5.0, 0, 0.8)
    _finish(study, sync, 6.0, 0, 0.6)
    for t in study.get_trials(states=(TrialState.WAITING,)):  # the promoted rung-1 trials ran meanwhile
        set_trial_state(study, trial_id_of(t), TrialState.RUNNING)
        set_trial_state(study, trial_id_of(t), TrialState.PRUNED)
    assert sync.next_phase()
    assert _waiting(study) == [(5.0, 1)]  # 0.8 ≥ 0.7 goes on; 0.6 does not
    assert sync.decisions()["0"]["promoted"] == ['{"x": 1.0}', '{"x": 3.0}', '{"x": 5.0}']


def test_promotions_lost_between_decision_and_enqueue_are_enqueued_next_time(tmp_path):
    from gradprune.search.halving import DECISIONS_ATTR

    study, sync = _sync_setup(tmp_path, {1.0: 0.9, 2.0: 0.5})
    decided = {"0": {"cut": 0.9, "promoted": ['{"x": 1.0}'], "values": {'{"x": 1.0}': 0.9, '{"x": 2.0}': 0.5},
                     "stderrs": {'{"x": 1.0}': 0.01, '{"x": 2.0}': 0.01}}}
    set_study_system_attr(study, DECISIONS_ATTR, decided)  # killed before enqueueing
    assert sync.next_phase()
    assert _waiting(study) == [(1.0, 1)]
    assert sync.enqueue_missing(sync.decisions()) == 0  # nothing missing any more


def test_sync_rows_keep_one_row_per_point_while_a_promoted_point_waits(tmp_path):
    from gradprune.search.halving import sync_rows

    study, sync = _sync_setup(tmp_path, {1.0: 0.9, 2.0: 0.5})
    rows = [{"trial": t.number, "status": "paused"} for t in study.get_trials()]
    assert [r["status"] for r in sync_rows(study, [dict(r) for r in rows])] == ["paused", "paused"]
    sync.next_phase()  # 1.0 promoted; its rung-1 trial waits
    assert [r["status"] for r in sync_rows(study, [dict(r) for r in rows])] == ["promoted", "pruned"]


def test_the_schedule_enters_the_fingerprint_of_halving_searches_only(monkeypatch):
    from gradprune.search.spec import SearchSpec

    base = {"base": "x.yaml", "grid": {"pruning.ratio": [0.1]}}
    full = SearchSpec(**base)
    spec = SearchSpec(**base, evaluation="halving")
    assert spec.halving_schedule() == "sync"
    assert SearchSpec(**base, evaluation="halving", sampler="tpe", n_trials=2).halving_schedule() == "async"
    monkeypatch.setattr(SearchSpec, "base_recipe_dict", lambda self: {})  # fingerprint() reads the base
    # a search without halving: the key does not change it (nor its fingerprint from before the key)
    assert full.fingerprint() == SearchSpec(**base, halving={"schedule": "async"}).fingerprint()
    # a halving search: the schedule that applies, given or resolved
    assert spec.fingerprint() == SearchSpec(**base, evaluation="halving", halving={"schedule": "sync"}).fingerprint()
    assert spec.fingerprint() != SearchSpec(**base, evaluation="halving", halving={"schedule": "async"}).fingerprint()
