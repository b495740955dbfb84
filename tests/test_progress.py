"""What a researcher sees while a run or search works: ETA arithmetic, stages, 80-column tables, headers."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from gradprune.eval.progress import EvalProgress
from gradprune.progress import layer_table, ratio_names, report_stage, summary_table, watching_stages
from gradprune.search.live import SearchDisplay, eta_seconds, format_eta, short_names
from gradprune.search.optuna_store import set_trial_system_attr, set_trial_user_attr, trial_id_of

KEYS = ["calibration.seq_len", "calibration.num_samples", "calibration.seed"]


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def plain_console() -> tuple[Console, io.StringIO]:
    buf = io.StringIO()
    return Console(file=buf, force_terminal=False, width=80, color_system=None), buf


def terminal_text(renderable, width: int = 80) -> str:
    buf = io.StringIO()
    Console(file=buf, force_terminal=True, width=width, color_system=None).print(renderable)
    return buf.getvalue()


def test_eta_is_mean_trial_time_times_remaining_over_workers_counted_down():
    assert eta_seconds([], remaining=5) is None  # no trial finished yet: no estimate
    assert eta_seconds([100.0, 200.0], remaining=4) == 600.0
    assert eta_seconds([100.0, 200.0], remaining=4, workers=2) == 300.0
    assert eta_seconds([100.0, 200.0], remaining=4, workers=2, elapsed=50.0) == 250.0
    assert eta_seconds([100.0], remaining=1, elapsed=500.0) == 0.0  # never negative
    assert eta_seconds([], remaining=0) == 0.0
    assert format_eta(None) == "-:--:--"
    assert format_eta(3725.4) == "1:02:05"


def test_grid_columns_show_the_distinguishing_part_of_each_key():
    assert short_names(KEYS) == {"calibration.seq_len": "seq_len", "calibration.num_samples": "num_samples",
                                 "calibration.seed": "seed"}
    assert short_names(["pruning.ratio", "x.ratio"]) == {"pruning.ratio": "pruning.ratio", "x.ratio": "x.ratio"}
    assert short_names(["importance.params.order", "pruning.ratio"])["importance.params.order"] == "order"


def test_display_off_terminal_eta_from_first_trial_and_one_line_per_stage():
    console, buf = plain_console()
    clock = Clock()
    with SearchDisplay(console, KEYS, total=4, clock=clock) as d:
        d.started(0, {"calibration.seq_len": 16, "calibration.num_samples": 8, "calibration.seed": 0})
        assert d.eta() is None
        report_stage("dense eval", "task tiny_arc 1/80")
        for k in range(1, 9):
            report_stage("calibrating", f"{k}/8")  # details move on; a log gets one line for the stage
        report_stage("pruned eval", "task tiny_arc 80/80")
        d.finished(0, {"status": "complete", "acc_mean": 0.7, "duration_s": 60.0})
        assert d.eta() == 180.0  # 60 s × 3 trials left, one worker
        clock.now += 30
        assert d.eta() == 150.0  # counted down between trials
        report_stage("calibrating", "1/8")  # after the trial: nobody listens any more
    lines = buf.getvalue().splitlines()
    assert lines[0].startswith("trial 0 started")
    assert [ln for ln in lines if ln.startswith("trial 0: ")] == [
        "trial 0: loading", "trial 0: dense eval task tiny_arc 1/80", "trial 0: calibrating 1/8",
        "trial 0: pruned eval task tiny_arc 80/80"]
    assert "1/4 done, ETA 0:03:00" in lines[-1]


def test_live_view_shows_stage_eta_and_readable_headers_in_80_columns():
    console, _ = plain_console()
    clock = Clock()
    with SearchDisplay(console, KEYS, total=6, done=0, clock=clock) as d:
        d.started(0, {"calibration.seq_len": 16, "calibration.num_samples": 8, "calibration.seed": 0})
        d.finished(0, {"calibration.seq_len": 16, "calibration.num_samples": 8, "calibration.seed": 0,
                       "status": "complete", "acc_mean": 0.75, "ppl": 2.5, "grad_norm_ratio": 3.1, "duration_s": 20.0})
        d.started(1, {"calibration.seq_len": 64, "calibration.num_samples": 8, "calibration.seed": 0})
        report_stage("calibrating", "3/8")
        clock.now += 4
        text = terminal_text(d)  # what the live view shows on a terminal now
    assert all(len(line) <= 80 for line in text.splitlines())
    header = next(line for line in text.splitlines() if "trial" in line and "status" in line)
    assert "seq_len" in header and "num_samples" in header and "seed" in header and "…" not in header
    row = next(line for line in text.splitlines() if line.split()[:2] == ["0", "complete"])
    assert row.split()[2:] == ["16", "8", "0", "0.7500", "2.500", "3.100", "20.0"]
    assert "trial 1: calibrating 3/8 (0:00:04 in this stage)" in text
    assert "1/6" in text and "ETA 0:01:36" in text  # 20 s × 5 left − 4 s


def test_ctrl_c_marks_the_running_trial_interrupted():
    console, buf = plain_console()
    d = SearchDisplay(console, KEYS, total=2)
    with pytest.raises(KeyboardInterrupt), d:
        d.started(3, {"calibration.seq_len": 16})
        assert "running" in terminal_text(d)
        raise KeyboardInterrupt
    assert "trial 3 interrupted" in buf.getvalue()
    table = terminal_text(d)
    assert "interrupted" in table and "running" not in table


def test_display_counts_every_workers_trials_from_the_study():
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study()
    for d_s in (30.0, 90.0):
        t = study.ask()
        set_trial_user_attr(study, trial_id_of(t), "duration_s", d_s)
        study.tell(t, 0.5)
    other = study.ask()  # another worker's running trial
    set_trial_system_attr(study, trial_id_of(other), "gradprune_owner", {"host": "elsewhere", "pid": 1})
    console, _ = plain_console()
    d = SearchDisplay(console, KEYS, total=6, study=study, clock=Clock())
    with d:
        assert d.eta() == 60.0 * 4 / 2  # mean 60 s × 4 trials left / 2 workers (this one and the other's)
        assert "2/6" in terminal_text(d) and "ETA 0:02:00" in terminal_text(d)


def test_evaluation_blocks_are_headed_dense_and_pruned(monkeypatch, tmp_path):
    from gradprune.eval import EvalResult, dense_cache, evaluation
    from gradprune.recipe import EvalSection

    console, buf = plain_console()
    seen = []

    def fake_evaluate(model, tokenizer, cfg, console=None, title="pruned"):
        with EvalProgress(console, title=title) as p:
            seen.append(p.title)
            p.add_row("r", "ppl x @128", total=2)
            p.finish("r", "ppl 2.0")
        return EvalResult(metrics={"ppl": 2.0}, info={})

    monkeypatch.setattr(evaluation, "evaluate", fake_evaluate)
    monkeypatch.setattr(dense_cache, "cache_key", lambda *a: ("k", {}))
    monkeypatch.setattr(dense_cache, "cache_dir", lambda: tmp_path)
    stages = []
    with watching_stages(lambda s, det: stages.append((s, det))):
        dense_cache.dense_metrics(None, None, EvalSection(run="ppl", ppl_datasets=["x"]), "id", console=console)
        fake_evaluate(None, None, None, console=console)
    assert seen == ["dense", "pruned"]
    text = buf.getvalue()
    assert text.index("dense model evaluation") < text.index("pruned model evaluation")
    assert ("dense eval", "ppl x @128 0/2") in stages and ("pruned eval", "") in stages


def test_tables_show_every_configured_collector_builtin_or_plugin():
    stats = ["grad_norm", "grad_mean", "grad_std", "grad_max", "grad_var", "grad_snr", "grad_l1"]
    rows = [{"layer": i, "kv_groups_kept": 1, "kv_groups_before": 2, "mlp_channels_kept": 300,
             "mlp_channels_before": 512, "params_after": 1000, "pruning_rate": 0.3, "extreme": False,
             "params_before": 2000, **{s: 0.1 * (i + 1) for s in stats}} for i in range(2)]
    text = terminal_text(layer_table(rows, stats))
    assert all(s in text for s in stats) and all(len(line) <= 80 for line in text.splitlines())
    metrics = {"params_after": 1, "params_before": 2, "pruning_ratio": 0.5, "ppl_ratio": 1.2}
    for s in stats:
        metrics.update({f"{s}_ratio": 2.0, f"{s}_max_layer": 1, f"{s}_min_layer": 0})
    assert ratio_names(metrics) == [f"{s}_ratio" for s in stats]
    text = terminal_text(summary_table(metrics))
    assert all(f"{s}_ratio" in text for s in stats) and "ppl_ratio" not in text


def test_no_git_noise_from_lm_eval_outside_a_checkout(tmp_path, monkeypatch, capfd):
    import lm_eval.evaluator as evaluator

    from gradprune.eval.quiet import quiet_libraries

    monkeypatch.chdir(tmp_path)  # not a git checkout
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))
    original = evaluator.get_git_commit_hash
    with quiet_libraries(lm_eval=True, datasets=False):
        assert evaluator.get_git_commit_hash() is None
    assert evaluator.get_git_commit_hash is original  # restored
    assert "fatal" not in capfd.readouterr().err


def test_the_summary_shows_one_perplexity_row_per_text_and_the_proxies():
    metrics = {"params_after": 1, "params_before": 2, "pruning_ratio": 0.5, "ppl": 2.47, "ppl_embedded": 2.47,
               "dense_ppl": 2.28, "dense_ppl_embedded": 2.28, "proxy_loss": 0.91, "proxy_dense_loss": 0.83,
               "proxy_kl": 0.05, "proxy_flip": 0.12}
    lines = terminal_text(summary_table(metrics)).splitlines()
    assert sum("ppl" in line and "proxy" not in line for line in lines) == 1
    assert any("ppl (embedded)" in line and "2.4700" in line and "2.2800" in line for line in lines)
    assert any("proxy_loss" in line and "0.9100" in line and "0.8300" in line for line in lines)
    assert any("proxy_kl" in line for line in lines) and any("proxy_flip" in line for line in lines)
    two = {**metrics, "ppl": 3.0, "ppl_ptb": 3.53}  # two texts: the mean and each text
    assert sum("ppl" in line and "proxy" not in line for line in terminal_text(summary_table(two)).splitlines()) == 3


def test_the_live_table_names_the_unit_of_its_time_column_in_80_columns():
    console = Console(file=io.StringIO(), width=80, force_terminal=True, color_system=None)
    d = SearchDisplay(console, ["calibration.seq_len", "calibration.num_samples", "calibration.seed"], total=2)
    d.finished(0, {"status": "complete", "calibration.seq_len": 128, "calibration.num_samples": 512,
                   "calibration.seed": 2000, "acc_mean": 0.7714, "ppl": 2.533, "grad_norm_ratio": 2.309,
                   "duration_s": 42.6})
    text = terminal_text(d)
    assert "time (s)" in text and "42.6" in text and all(len(line) <= 80 for line in text.splitlines())
