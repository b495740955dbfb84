"""Preflight: bad input fails before the model loads, every problem in one message.

The CLI cases run ``gradprune.cli.main`` in-process with ``run_experiment`` (which loads the model,
evaluates it dense and calibrates) replaced by a function that fails the test, so a refusal is proven
to come before anything expensive. Each case also checks: exit 2, one ``error:`` line on stderr, no
traceback, no progress line of evaluation or calibration, and nothing written where the results go.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from gradprune.cli import main
from gradprune.errors import GradpruneError
from gradprune.preflight import PreflightError, accelerator_problems, preflight
from gradprune.pruning.reach import Reach, model_shape, reach
from gradprune.recipe import PruningSection, TrainerSection, load_recipe
from tests.conftest import make_model

ROOT = Path(__file__).resolve().parents[1]
TINY = str(ROOT / "recipes/tiny.yaml")
EXPENSIVE = ("ppl", "task", "calibrating")


@pytest.fixture
def no_heavy_work(monkeypatch):
    """Fail the test if the run gets as far as loading the model."""
    import gradprune.models.loading
    import gradprune.run

    def refuse(*args, **kwargs):
        raise AssertionError("the run started (model load, dense eval, calibration) before refusing")

    monkeypatch.setattr(gradprune.run, "run_experiment", refuse)
    monkeypatch.setattr(gradprune.models.loading, "load_model", refuse)


def refused(argv: list[str], capfd) -> str:
    """Run the CLI, check it refused cleanly before any work, and return the one error line."""
    code = main(argv)
    out, err = capfd.readouterr()
    assert code == 2, out + err
    assert "Traceback" not in out + err
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and len(err.strip().splitlines()) == 1, err
    started = [line for line in (out + err).splitlines() if line.strip().lower().startswith(EXPENSIVE)]
    assert not started, started
    return errors[0]


def _files(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("*")}


# --------------------------------------------------------------------------------------------------
# the largest reachable ratio, from the config, against the real planner


def _random_scores(layers) -> dict:
    g = torch.Generator().manual_seed(0)
    scores = {}
    for lm in layers:
        scores[(lm.index, "attn")] = torch.rand(lm.n_kv, generator=g)
        scores[(lm.index, "mlp")] = torch.rand(lm.n_channels, generator=g)
    return scores


def _planner_removes(model, pruning: PruningSection) -> int | None:
    """Parameters the real planner removes at ``pruning`` (None when it refuses the ratio)."""
    from gradprune.errors import PlanError
    from gradprune.models.adapters import get_adapter
    from gradprune.pruning.planner import plan_pruning, removed_params

    adapter = get_adapter(model)
    layers = adapter.layers(model)
    try:
        plan = plan_pruning(_random_scores(layers), layers, adapter.count_params(model), pruning,
                            model.config.model_type)
    except PlanError:
        return None
    return sum(v["removed"] for v in removed_params(plan, layers).values())


PRUNING_VARIANTS = [
    {},
    {"attention_layers": (1, 4), "mlp_layers": (1, 4)},
    {"attention_layers": (0, 2), "mlp_layers": (2, 4), "min_keep": 3},
    {"prune_attention": False},
    {"prune_mlp": False, "min_keep": 0},
]


def _check_reach_against_the_planner(model, **kw) -> None:
    shape = model_shape(model.config)
    from gradprune.models.adapters import get_adapter

    adapter = get_adapter(model)
    assert shape.total == adapter.count_params(model)
    assert [(g.n_kv, g.attn_cost, g.n_channels, g.mlp_cost) for g in shape.layers] == [
        (lm.n_kv, lm.attn_group_params(), lm.n_channels, lm.mlp_group_params()) for lm in adapter.layers(model)]
    r = reach(shape, PruningSection(**kw))
    assert 0 < r.max_ratio < 1
    for ratio in (r.max_ratio - 1e-6, r.max_ratio, r.max_ratio + 1e-6):
        removed = _planner_removes(model, PruningSection(**kw, ratio=ratio))
        assert (removed is not None) == r.allows(ratio), (ratio, r)
    # just below the maximum the planner removes every removable group: exactly the computed maximum
    assert _planner_removes(model, PruningSection(**kw, ratio=r.max_ratio - 1e-9)) == r.removable
    assert _planner_removes(model, PruningSection(**kw, ratio=r.max_ratio + 1e-6)) is None


@pytest.fixture(scope="module")
def embedded_model():
    from gradprune.models.loading import load_model
    from gradprune.recipe import ModelSection

    return load_model(ModelSection())[0]


@pytest.mark.parametrize("kw", PRUNING_VARIANTS, ids=str)
def test_reach_is_what_the_planner_reaches_on_the_embedded_model(embedded_model, kw):
    _check_reach_against_the_planner(embedded_model, **kw)


@pytest.mark.parametrize("arch,extra", [
    ("mistral", {}),
    ("mistral", {"tie_word_embeddings": False}),
    ("llama", {"attention_bias": True, "mlp_bias": True, "tie_word_embeddings": False}),
    ("qwen2", {}),  # q/k/v biases, no o bias
], ids=["mistral-tied", "mistral-untied", "llama-biases", "qwen2"])
@pytest.mark.parametrize("kw", PRUNING_VARIANTS[1:3], ids=str)
def test_reach_is_what_the_planner_reaches_on_config_built_models(arch, extra, kw):
    _check_reach_against_the_planner(make_model(arch, **extra), **kw)


@pytest.mark.parametrize("round_to", [8, 32, 200])
def test_reach_with_round_to_counts_the_channels_rounding_takes_back(round_to):
    model = make_model("mistral", intermediate_size=100)
    kw = {"round_to": round_to, "min_keep": 3}
    r = reach(model_shape(model.config), PruningSection(**kw))
    unrounded = reach(model_shape(model.config), PruningSection(min_keep=3))
    # the planner accepts up to the unrounded maximum, then keeps channels back: it ends at the rounded one
    removed = _planner_removes(model, PruningSection(**kw, ratio=unrounded.max_ratio - 1e-9))
    assert removed == r.removable < unrounded.removable


def test_reach_allows_exactly_what_the_planner_compares():
    r = Reach(total=1000, removable=300)
    assert r.allows(0.3) and not r.allows(0.3001) and r.max_ratio == 0.3


# --------------------------------------------------------------------------------------------------
# bad input on the command line: refused before any work, every problem in one message


def test_missing_calibration_file(recipe_args, tmp_path, capfd, no_heavy_work):
    message = refused(["run", TINY, *recipe_args, "calibration.dataset.path=/nonexistent/calib.txt"], capfd)
    assert "calibration.dataset.path" in message and "/nonexistent/calib.txt" in message
    assert "expected a .txt or .jsonl file" in message
    assert not (tmp_path / "out").exists()


@pytest.fixture
def task_dir_missing_two(tmp_path) -> Path:
    """A copy of the embedded task folder where tiny_piqa and tiny_arc have lost their data files."""
    from gradprune.assets import TASKS_DIR

    d = tmp_path / "tasks"
    shutil.copytree(TASKS_DIR, d)
    shutil.rmtree(d / "tiny_piqa")
    (d / "tiny_arc/test.jsonl").unlink()
    return d


def test_two_tasks_without_data_are_listed_in_one_message(recipe_args, tmp_path, capfd, no_heavy_work,
                                                          task_dir_missing_two):
    message = refused(["run", TINY, *recipe_args, "eval.run=zeroshot", f"eval.task_dir={task_dir_missing_two}",
                       "eval.tasks=[tiny_piqa,tiny_boolq,tiny_arc]"], capfd)
    assert "2 problems" in message
    assert "task 'tiny_piqa' cannot be loaded" in message and "task 'tiny_arc' cannot be loaded" in message
    assert "tiny_boolq" not in message
    assert not (tmp_path / "out").exists()


def test_missing_ppl_file(recipe_args, tmp_path, capfd, no_heavy_work):
    missing = tmp_path / "no_ppl.txt"
    message = refused(["run", TINY, *recipe_args, "eval.run=ppl", f"eval.ppl_datasets=[embedded,{missing}]"], capfd)
    assert "eval.ppl_datasets" in message and str(missing) in message and "text file" in message
    assert not (tmp_path / "out").exists()


def test_every_kind_of_problem_in_one_message(recipe_args, tmp_path, capfd, no_heavy_work, task_dir_missing_two):
    (tmp_path / "afile").write_text("x")
    message = refused(["run", TINY, *recipe_args, "calibration.dataset.path=/nonexistent/calib.txt",
                       "eval.run=all", f"eval.ppl_datasets=[{tmp_path / 'no_ppl.txt'}]",
                       f"eval.task_dir={task_dir_missing_two}", "eval.tasks=[tiny_piqa,tiny_arc]",
                       "pruning.ratio=0.99", f"output.dir={tmp_path / 'afile' / 'out'}"], capfd)
    for fragment in ("6 problems", "calib.txt", "no_ppl.txt", "'tiny_piqa'", "'tiny_arc'", "pruning.ratio=0.99",
                     "afile"):
        assert fragment in message, fragment


@pytest.mark.parametrize("where", ["etc-passwd", "tmp-file"])
def test_output_dir_below_a_file(where, recipe_args, tmp_path, capfd, no_heavy_work):
    if where == "etc-passwd":
        if not Path("/etc/passwd").is_file():
            pytest.skip("no /etc/passwd here")
        out, parent = "/etc/passwd/x", "/etc/passwd"
    else:
        (tmp_path / "notes.txt").write_text("x")
        out, parent = str(tmp_path / "notes.txt/results/x"), str(tmp_path / "notes.txt")
    before = _files(tmp_path)
    message = refused(["run", TINY, *recipe_args, f"output.dir={out}"], capfd)
    assert "output.dir" in message and f"{parent!r} is a file, not a directory" in message
    assert _files(tmp_path) == before


def _can_mount_read_only(d: Path) -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "-m", "sh", "-c", f"mount -t tmpfs -o ro,size=1m tmpfs '{d}'"],
                           capture_output=True)
    return probe.returncode == 0


def test_output_dir_on_a_read_only_file_system(recipe_args, tmp_path):
    """A real read-only tmpfs (in a private mount namespace, so nothing outlives the command). Root may write
    anywhere on a writable file system, so this is the case ``os.access`` gets wrong."""
    ro = tmp_path / "ro"
    ro.mkdir()
    if not _can_mount_read_only(ro):
        pytest.skip("cannot mount a read-only tmpfs here (needs unshare and CAP_SYS_ADMIN)")
    args = [a for a in recipe_args if not a.startswith("output.dir=")]
    cli = " ".join(f"'{a}'" for a in [sys.executable, "-m", "gradprune.cli", "run", TINY, *args,
                                      f"output.dir={ro}/results/x"])
    proc = subprocess.run(["unshare", "-m", "sh", "-c", f"mount -t tmpfs -o ro,size=1m tmpfs '{ro}' && exec {cli}"],
                          capture_output=True, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"}, timeout=300)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "is not writable" in proc.stderr and "Read-only file system" in proc.stderr
    assert not any(line.strip().lower().startswith(EXPENSIVE) for line in proc.stdout.splitlines())


def test_output_dir_under_a_directory_that_refuses_writes(recipe_args, tmp_path, capfd, no_heavy_work, monkeypatch):
    """chmod 0o555 stops writes for a normal user; tests often run as root, where it does not, so the
    refusal the file system would give is also simulated at the one call that writes."""
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    if os.geteuid() == 0:
        import tempfile

        import gradprune.outputs

        real = tempfile.mkstemp

        def mkstemp(*args, dir=None, **kw):  # noqa: A002 - tempfile's own keyword
            if Path(dir) == locked:
                raise PermissionError(13, "Permission denied")
            return real(*args, dir=dir, **kw)

        monkeypatch.setattr(gradprune.outputs.tempfile, "mkstemp", mkstemp)
    try:
        message = refused(["run", TINY, *recipe_args, f"output.dir={locked / 'run1'}"], capfd)
    finally:
        locked.chmod(0o755)
    assert "output.dir" in message and "is not writable" in message and "Permission denied" in message
    assert f"it would be created in {str(locked)!r}" in message
    assert list(locked.iterdir()) == []


def test_writable_check_leaves_nothing_behind(tmp_path):
    from gradprune.outputs import check_writable_dir

    (tmp_path / "existing").mkdir()
    before = _files(tmp_path)
    check_writable_dir(tmp_path / "existing")
    check_writable_dir(tmp_path / "existing/new/deeper")
    assert _files(tmp_path) == before


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA GPU")
@pytest.mark.parametrize("accelerator", ["gpu", "cuda"])
def test_gpu_accelerator_without_a_gpu(accelerator, recipe_args, tmp_path, capfd, no_heavy_work):
    message = refused(["run", TINY, *recipe_args, f"trainer.accelerator={accelerator}"], capfd)
    assert f"trainer.accelerator={accelerator!r}" in message and "no CUDA GPU is available" in message
    assert "trainer.accelerator=cpu" in message
    assert not (tmp_path / "out").exists()


def test_unknown_accelerator(recipe_args, capfd, no_heavy_work):
    message = refused(["run", TINY, *recipe_args, "trainer.accelerator=npu"], capfd)
    assert "trainer.accelerator='npu' is not a Lightning accelerator" in message and "cuda" in message


def test_cpu_devices_lightning_refuses(recipe_args, capfd, no_heavy_work):
    """Lightning runs ``devices: 4`` on CPU as 4 processes (accepted); a GPU index list is not CPU cores."""
    message = refused(["run", TINY, *recipe_args, "trainer.devices='0,1'"], capfd)
    assert "trainer.devices='0,1'" in message and "int > 0" in message


def test_more_gpus_than_the_machine_has(monkeypatch):
    """A one-GPU machine, simulated at Lightning's device count (so its own parsing gives the message)."""
    import lightning.fabric.accelerators.cuda as fabric_cuda
    import lightning.pytorch.accelerators.cuda as pl_cuda

    monkeypatch.setattr(pl_cuda, "num_cuda_devices", lambda: 1)
    monkeypatch.setattr(fabric_cuda, "num_cuda_devices", lambda: 1)
    monkeypatch.setattr(fabric_cuda, "_get_all_visible_cuda_devices", lambda: [0])
    assert accelerator_problems(TrainerSection(accelerator="gpu", devices=1)) == []
    [message] = accelerator_problems(TrainerSection(accelerator="gpu", devices=4))
    assert "trainer.devices=4" in message and "this machine has 1 CUDA GPU device(s)" in message


def test_unreachable_ratio_names_the_maximum(recipe_args, tmp_path, capfd, no_heavy_work):
    message = refused(["run", TINY, *recipe_args, "pruning.ratio=0.999"], capfd)
    assert "pruning.ratio=0.999 cannot be reached" in message and "use pruning.ratio <= 0." in message
    assert "layers [0, 4)" in message and "min_keep=1" in message
    assert not (tmp_path / "out").exists()


def test_layer_range_beyond_the_model_from_the_config(recipe_args, capfd, no_heavy_work):
    message = refused(["run", TINY, *recipe_args, "pruning.mlp_layers=[0,9]", "calibration.seq_len=100000"], capfd)
    assert "pruning.mlp_layers: [0, 9) is outside the model, which has 4 layers" in message
    assert "calibration.seq_len=100000 is above the model's max_position_embeddings" in message


# --------------------------------------------------------------------------------------------------
# validate


def test_validate_data_lists_the_missing_calibration_file_and_task(capfd):
    message = refused(["validate", "--data", TINY, "calibration.dataset.name=text_file",
                       "calibration.dataset.path=/nonexistent/calib.txt", "eval.tasks=[tiny_piqa,no_such_task]"], capfd)
    assert "2 problems" in message and "/nonexistent/calib.txt" in message and "'no_such_task'" in message


def test_validate_data_passes_on_the_tiny_recipe(capfd):
    assert main(["validate", "--data", TINY]) == 0
    out = " ".join(capfd.readouterr().out.split())
    for fragment in ("preflight ok", "model config", "data sets", "accelerator cpu", "output dir"):
        assert fragment in out, fragment


def test_plain_validate_loads_no_data(capfd, monkeypatch):
    import gradprune.preflight

    def refuse(*args, **kwargs):
        raise AssertionError("plain validate loaded data")

    monkeypatch.setattr(gradprune.preflight, "calibration_problems", refuse)
    monkeypatch.setattr(gradprune.preflight, "accelerator_problems", refuse)
    # a missing calibration file and a GPU are only found with --data; the unreachable ratio needs no data
    assert main(["validate", TINY, "calibration.dataset.name=text_file", "calibration.dataset.path=/nope.txt",
                 "trainer.accelerator=gpu"]) == 0
    assert "ratio <= 0.5" in " ".join(capfd.readouterr().out.split())
    assert main(["validate", TINY, "pruning.ratio=0.9"]) == 2
    assert "pruning.ratio=0.9 cannot be reached" in capfd.readouterr().err


@pytest.fixture
def empty_hub_cache(tmp_path, monkeypatch):
    """No hub model is cached (whatever this machine holds)."""
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def test_plain_validate_of_a_hub_recipe_offline_notes_the_unchecked_config(capfd, empty_hub_cache):
    assert main(["validate", str(ROOT / "recipes/mistral_20.yaml")]) == 0
    out = " ".join(capfd.readouterr().out.split())
    assert "model config of 'mistralai/Mistral-7B-v0.3' not checked (not cached)" in out


def test_validate_data_of_a_hub_recipe_offline_is_an_error(capfd, empty_hub_cache, tmp_path):
    message = refused(["validate", "--data", str(ROOT / "recipes/mistral_20.yaml"), "eval.tasks=[]",
                       "eval.ppl_datasets=[wikitext2]", f"output.dir={tmp_path / 'out'}"], capfd)
    assert "3 problems" in message
    assert "mistralai/Mistral-7B-v0.3" in message and "cache" in message  # the config cannot be fetched
    assert re.search(r"\(2\) calibration\.dataset.{0,80}wikitext", message)  # nor the calibration data
    assert "eval.ppl_datasets: 'wikitext2'" in message and "cannot be loaded" in message


# --------------------------------------------------------------------------------------------------
# search: every grid point checked before the study starts


@pytest.fixture
def write_search(recipe_args, tmp_path):
    """Write a search recipe over the tiny test model with the given grid; returns its path."""
    import yaml

    def write(grid: dict, extra_overrides: tuple[str, ...] = ()) -> Path:
        overrides = [a for a in recipe_args if not a.startswith("output.dir=")] + list(extra_overrides)
        spec = {"base": TINY, "overrides": overrides, "grid": grid, "output_dir": str(tmp_path / "search")}
        (tmp_path / "search.yaml").write_text(yaml.safe_dump(spec))
        return tmp_path / "search.yaml"

    return write


def test_search_refused_when_no_grid_point_can_run(write_search, tmp_path, capfd, no_heavy_work):
    message = refused(["search", str(write_search({"pruning.ratio": [0.98, 0.99]}))], capfd)
    assert "grid point {'pruning.ratio': 0.98}: pruning.ratio=0.98 cannot be reached" in message
    assert "grid point {'pruning.ratio': 0.99}" in message
    assert not (tmp_path / "search").exists()


def test_search_refused_for_a_missing_base_calibration_file(write_search, tmp_path, capfd, no_heavy_work):
    path = write_search({"pruning.ratio": [0.1, 0.2]}, extra_overrides=("calibration.dataset.path=/nope/c.txt",))
    message = refused(["search", str(path)], capfd)
    assert message.count("/nope/c.txt") == 1 and "grid point" not in message  # one problem, shared by all
    assert not (tmp_path / "search").exists()


def test_search_warns_about_points_that_will_fail(write_search, monkeypatch, capfd):
    from gradprune.search import command

    path = write_search({"pruning.ratio": [0.2, 0.97]})
    spec = command.load_search_spec(str(path), [])
    report = command.preflight_search(spec, None)
    assert len(report.warnings) == 1 and report.warnings[0].startswith("grid point {'pruning.ratio': 0.97}")


# --------------------------------------------------------------------------------------------------
# the API and the happy path


def test_preflight_passes_the_tiny_recipe_and_says_what_it_checked(tmp_path):
    report = preflight(load_recipe(TINY, [f"output.dir={tmp_path / 'out'}"]), out_dir=tmp_path / "out")
    assert "model config" in report.checked and "data sets" in report.checked and not report.notes
    assert not (tmp_path / "out").exists()


def test_preflight_error_lists_problems_one_by_one(tmp_path):
    recipe = load_recipe(TINY, ["calibration.dataset.name=text_file", "calibration.dataset.path=/nope.txt",
                                "pruning.ratio=0.99", "eval.run=none"])
    with pytest.raises(PreflightError) as info:
        preflight(recipe, out_dir=tmp_path)
    assert isinstance(info.value, GradpruneError) and len(info.value.problems) == 2
    assert str(info.value).startswith("2 problems found before loading the model: (1) ")


def test_end_of_run_names_the_saved_model(recipe_args, tmp_path, capfd):
    assert main(["run", TINY, *recipe_args, "output.save_model=true"]) == 0
    out = " ".join(capfd.readouterr().out.split())
    model = str(tmp_path / "out/model")
    assert f"pruned model in {model}" in out and f"gradprune.load_pruned({model!r})" in out
    assert (tmp_path / "out/model").is_dir()


# --------------------------------------------------------------------------------------------------
# what the calibration text can give, the model's shape cached, advice given once


def test_the_windows_of_a_hub_stream_are_noted_as_not_counted(corpus_file, tokenizer):
    from gradprune.preflight import window_problems
    from gradprune.recipe import CalibrationSection

    stream = CalibrationSection(dataset={"name": "hf", "path": "allenai/c4", "streaming": True}).dataset
    problems, note = window_problems(stream, tokenizer, 64, 10**7)
    assert problems == [] and "not counted" in note and "allenai/c4" in note
    local = CalibrationSection(dataset={"name": "text_file", "path": str(corpus_file)}).dataset
    problems, note = window_problems(local, tokenizer, 32, 10**7)
    assert note is None and "holds only" in problems[0] and "calibration.num_samples=10000000" in problems[0]


def test_the_count_of_windows_matches_what_the_draw_can_take(corpus_file, tokenizer):
    from gradprune.data.sources import TextFile
    from gradprune.data.windows import available_windows, draw_windows
    from gradprune.errors import DataError

    source = TextFile(TextFile.Params(path=str(corpus_file)))
    n = available_windows(source, tokenizer, 64, 10**9)
    assert draw_windows(source, tokenizer, 64, n, seed=3).input_ids.shape == (n, 64)
    with pytest.raises(DataError, match="holds only"):
        draw_windows(source, tokenizer, 64, n + 1, seed=3)


def test_the_model_shape_is_built_once_then_read_from_the_cache(monkeypatch, tmp_path):
    import gradprune.pruning.reach as reach_module
    from gradprune.models.loading import _load_config, resolve_model_path
    from gradprune.recipe import ModelSection

    monkeypatch.setenv("GRADPRUNE_CACHE", str(tmp_path))
    config = _load_config(resolve_model_path("embedded"), ModelSection())
    first = reach_module.cached_model_shape(config)
    assert first == model_shape(config) and list((tmp_path / "shapes").glob("*.json"))

    def no_build(config):
        raise AssertionError("the model was built again")

    monkeypatch.setattr(reach_module, "model_shape", no_build)
    assert reach_module.cached_model_shape(config) == first


def test_tasks_that_fail_alike_are_one_problem_and_the_offline_hint_is_given_once():
    from gradprune.data.sources import HINT_START, dedupe_hints

    hint = f"{HINT_START}offline mode is on: run once with network access; or point eval.task_dir at local files"
    problems = [f"eval.tasks: task 'a' cannot be loaded: its data set 'x' is not available (E). {hint}",
                f"eval.tasks: task 'b' cannot be loaded: its data set 'y' is not available (E). {hint}",
                "eval.tasks: task 'c' cannot be loaded: the datasets cache cannot be written (E)",
                "eval.tasks: task 'd' cannot be loaded: the datasets cache cannot be written (E)"]
    out = dedupe_hints(problems)
    assert sum(HINT_START in p for p in out) == 1 and HINT_START in out[1] and "(see below)" in out[0]
    assert out[2] == "eval.tasks: tasks 'c', 'd' cannot be loaded: the datasets cache cannot be written (E)"
    assert len(out) == 3


def test_a_missing_task_data_file_is_named_without_the_offline_hint(tmp_path):
    from gradprune.assets import TASKS_DIR
    from gradprune.data.sources import HINT_START
    from gradprune.eval.checks import eval_problems
    from gradprune.recipe import EvalSection

    shutil.copytree(TASKS_DIR, tmp_path / "tasks")
    (tmp_path / "tasks/tiny_piqa/test.jsonl").unlink()
    cfg = EvalSection(run="zeroshot", tasks=["tiny_piqa"], task_dir=str(tmp_path / "tasks"))
    (problem,) = eval_problems(cfg, load_data=True)
    assert f"its data file {str(tmp_path / 'tasks/tiny_piqa/test.jsonl')!r} does not exist" in problem
    assert HINT_START not in problem
