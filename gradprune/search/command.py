"""``gradprune search``: validate, preflight every grid point, open (or resume) the study, run trials until
the grid is done."""

from __future__ import annotations

import contextlib
import csv
import itertools
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.text import Text

from gradprune.errors import GradpruneError, RecipeError
from gradprune.files import atomic_write_json, temp_prefix
from gradprune.outputs import ANALYSIS_FILES, check_writable_dir
from gradprune.progress import print_plain
from gradprune.search.spec import SEED_KEY, SearchSpec, load_search_spec, recipe_for
from gradprune.search.study import (
    JOURNAL,
    START_OVER,
    enqueue_grid,
    file_lock,
    journal_path,
    make_sampler,
    open_storage,
    retry_failed,
    stored_trial_numbers,
)
from gradprune.search.table import check_added_columns

MARKER = "search.json"


def _space(spec: SearchSpec) -> dict[str, list[Any]]:
    """The Optuna search space: the grid plus the replicate seeds."""
    if spec.replicates > 1 and SEED_KEY in spec.grid:
        raise RecipeError(f"{spec.source}: use either `replicates` or a grid over {SEED_KEY}, not both")
    space = dict(spec.grid)
    if spec.replicates > 1:
        base_seed = spec.base_recipe_dict().get("calibration", {}).get("seed", 0)
        space[SEED_KEY] = spec.replicate_seeds(int(base_seed))
    return space


def _all_points(space: dict[str, list[Any]]) -> list[dict[str, Any]]:
    keys = list(space)
    return [dict(zip(keys, c, strict=True)) for c in itertools.product(*space.values())]


def _read_marker(out: Path) -> str | None:
    """The fingerprint ``search.json`` records (None where there is none); a damaged file is an error."""
    marker = out / MARKER
    if not marker.exists():
        return None
    try:
        data = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        detail = getattr(exc, "msg", None) or getattr(exc, "strerror", None) or type(exc).__name__
        raise GradpruneError(f"{marker} is damaged ({detail}): it records which search {str(out)!r} holds. Restore "
                             f"it from a backup (rerunning the original search recipe resumes), or {START_OVER}") \
            from None
    if not isinstance(data, dict) or not isinstance(data.get("fingerprint"), str):
        raise GradpruneError(f"{marker} is damaged (no \"fingerprint\" string): it records which search "
                             f"{str(out)!r} holds. Restore it from a backup, or {START_OVER}")
    return data["fingerprint"]


def claim_dir(out: Path, spec: SearchSpec, source: str | Path) -> None:
    """Make ``out`` this search's folder before its first trial, atomically: ``search.json`` (naming the
    search's fingerprint) is created only where none exists (a hard link of a complete temp file, which
    fails where the name is taken), so of two searches started at once on a new folder one claims it and
    the other is refused; a worker of the same search finds its own fingerprint there and joins."""
    marker = out / MARKER
    record = {"fingerprint": spec.fingerprint(), "source": str(source), "spec": spec.model_dump(mode="json")}
    fd, tmp = tempfile.mkstemp(prefix=temp_prefix(MARKER), suffix=".tmp", dir=out)
    os.close(fd)
    try:
        atomic_write_json(tmp, record)
        try:
            _create_exclusive(Path(tmp), marker)
        except FileExistsError:
            old = _read_marker(out)
            if old != spec.fingerprint():
                raise GradpruneError(
                    f"output_dir {str(out)!r} was claimed by a different search (fingerprint {old}, this one "
                    f"{spec.fingerprint()}) started at the same time; its trials are running there. Choose "
                    f"another --output_dir, or wait for it and rerun") from None
    finally:
        Path(tmp).unlink(missing_ok=True)


def _create_exclusive(complete: Path, target: Path) -> None:
    """Create ``target`` with the contents of ``complete`` unless it exists (FileExistsError)."""
    try:
        os.link(complete, target)  # readers never see a half-written file
    except FileExistsError:
        raise
    except OSError:  # a file system without hard links: exclusive creation, then the bytes
        with open(target, "xb") as fh:
            fh.write(complete.read_bytes())


def results_on_disk(out: Path) -> set[int]:
    """Numbers of the trials whose results are on disk: rows of search_results.csv, trials/*/run.json."""
    numbers: set[int] = set()
    table = out / "search_results.csv"
    if table.is_file():
        with contextlib.suppress(OSError, UnicodeDecodeError, csv.Error), open(table, newline="", encoding="utf-8") as fh:
            for row in csv.DictReader(fh):
                with contextlib.suppress(TypeError, ValueError):
                    numbers.add(int(row.get("trial") or ""))
    for run_json in (out / "trials").glob("trial_*/run.json"):
        with contextlib.suppress(ValueError):
            numbers.add(int(run_json.parent.name.removeprefix("trial_")))
    return numbers


def storage_problem(out: Path, spec: SearchSpec, storage: str | None) -> str | None:
    """Why the study storage cannot resume this search's results on disk (None where it can).

    Results whose trials the storage does not hold (it was deleted, emptied or replaced by an older
    copy) mean it lost them: opening it would start the search over and run every point again. A
    damaged journal raises a GradpruneError of its own.
    """
    on_disk = results_on_disk(out)
    journal = journal_path(storage, out)
    if journal is not None and (not journal.exists() or journal.stat().st_size == 0):
        stored: set[int] = set()
        state = "is missing" if not journal.exists() else "is empty"
    else:
        stored = stored_trial_numbers(open_storage(storage, out), study_name(spec))
        state = "does not hold them"
    lost = sorted(on_disk - stored)
    if not lost:
        return None
    where = str(journal) if journal is not None else f"--storage {storage!r} (study {study_name(spec)!r})"
    shown = ", ".join(map(str, lost[:5])) + (", ..." if len(lost) > 5 else "")
    return (f"{str(out)!r} holds results of {len(lost)} trial(s) ({shown}: search_results.csv, trials/) but the "
            f"study storage {where} {state}, so the search would start over and run every point again. "
            f"Restore the storage from a backup, or {START_OVER}")


def study_name(spec: SearchSpec) -> str:
    """The Optuna study of a search."""
    return spec.study_name or f"gradprune-{spec.fingerprint()}"


def _search_files() -> list[str]:
    """The names of everything a search and its analysis write in the output dir."""
    return [MARKER, JOURNAL, JOURNAL + ".lock", ".search.lock", "search_results.csv", "trials", "cache",
            "halving_decisions.json", "screen_selection.json", *ANALYSIS_FILES]


def _temp_files(out: Path) -> list[Path]:
    """Temp files of atomic writes of the search's and the analysis' files in ``out``."""
    names = _search_files()
    return [p for p in out.glob(".*.tmp") if any(p.name.startswith(f".{n}.") for n in names)]


def _previous_files(out: Path) -> list[Path]:
    """Every file and folder a previous search and its analysis wrote in ``out``: nothing else."""
    found = [out / n for n in _search_files() if (out / n).exists() or (out / n).is_symlink()]
    return found + _temp_files(out)


def clean_abandoned(out: Path) -> int:
    """Remove the temp files that killed writes left in ``out`` (and its cache); returns how many.
    Those of live writers (another worker's, right now) stay."""
    from gradprune.files import abandoned_temp

    cache = out / "cache"
    temps = _temp_files(out) + (sorted(cache.rglob(".*.tmp")) if cache.is_dir() else [])
    removed = 0
    for p in temps:
        if abandoned_temp(p):
            with contextlib.suppress(OSError):
                shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
                removed += 1
    return removed


def _wipe(out: Path) -> None:
    for p in _previous_files(out):
        shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink(missing_ok=True)


def _guard_dir(out: Path, spec: SearchSpec, overwrite: bool, storage: str | None) -> None:
    """One output dir holds one search: the same one resumes, another is refused (or wiped on request).

    The same search whose storage is damaged or lost its results is refused too: resuming it would run
    every point again (or fail on the damaged file). ``overwrite`` wipes the dir's search and analysis
    files in these cases, and only then (workers started together with --overwrite share one new search).
    """
    if out.exists() and not out.is_dir():
        raise GradpruneError(f"output_dir {str(out)!r} is a file; expected a directory")
    try:
        old = _read_marker(out)
        if old is None and (out / "search_results.csv").exists():
            raise GradpruneError(f"output_dir {str(out)!r} holds a search_results.csv from another tool or version "
                                 f"(no {MARKER}); choose another --output_dir or pass --overwrite")
        if old is not None and old != spec.fingerprint():
            raise GradpruneError(
                f"output_dir {str(out)!r} holds a different search (fingerprint {old}, this one "
                f"{spec.fingerprint()}). Rerun the original search recipe to resume it, choose another "
                f"--output_dir, or pass --overwrite to delete its results")
        problem = storage_problem(out, spec, storage) if out.exists() else None
        if problem is not None:
            raise GradpruneError(problem)
    except GradpruneError:
        if not overwrite:
            raise
        _wipe(out)


def open_study(spec: SearchSpec, out: Path, storage_url: str | None, retry: bool = False):
    """Create or load the study; a grid search enqueues its points once. ``retry`` enqueues again every
    point whose latest attempt failed (under the search's lock, so two retrying workers enqueue it once)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = open_storage(storage_url, out)
    space = _space(spec)
    name = study_name(spec)
    with file_lock(out / ".search.lock"):
        try:
            study = optuna.create_study(study_name=name, storage=storage, load_if_exists=True, direction="maximize",
                                        sampler=make_sampler(spec.sampler, space, spec.seed))
        except Exception as exc:
            raise GradpruneError(f"cannot open the Optuna study {name!r}: {type(exc).__name__}: {exc}") from None
        if spec.sampler == "grid":
            enqueue_grid(study, _all_points(space))
        retried = retry_failed(study) if retry else []
    return study, space, retried


def _stored_study(spec: SearchSpec, out: Path, storage_url: str | None):
    """The search's study as stored (read only), or None where there is none yet."""
    import optuna

    journal = journal_path(storage_url, out)
    if journal is not None and not journal.is_file():
        return None
    try:
        return optuna.load_study(study_name=study_name(spec), storage=open_storage(storage_url, out))
    except KeyError:
        return None


def preflight_search(spec: SearchSpec, out: Path | None, **checks: bool):
    """Preflight every grid point's recipe (each model and data set once) and the search's output dir.

    A problem no point escapes is an error; one of some points only comes back as a warning of the
    report, since the other points can run (``checks``: as for :func:`gradprune.preflight.preflight`).
    """
    from gradprune.preflight import preflight_points
    from gradprune.search.gpus import multi_device_refusal

    points = [(point, recipe_for(spec, point)) for point in spec.points()]
    refused = [point for point, recipe in points if multi_device_refusal(recipe, "") is not None]
    if refused:  # named by the search recipe when every point asks for it, else by the first point that does
        where = spec.source if len(refused) == len(points) else f"{spec.source} (grid point {refused[0]})"
        raise GradpruneError(multi_device_refusal(recipe_for(spec, refused[0]), where))
    return preflight_points(points, out_dir=out, out_key="output_dir", **checks)


def search_command(path: str, overrides: list[str], storage: str | None = None, output_dir: str | None = None,
                   n_trials: int | None = None, overwrite: bool = False, retry: bool = False,
                   gpus: str | None = None, argv: list[str] | None = None) -> int:
    """Entry point of ``gradprune search`` (``retry``: ``--retry-failed``; ``gpus``: ``--gpus``, one worker
    process per GPU, each started with this command line ``argv`` less ``--gpus``)."""
    spec = load_search_spec(path, overrides)
    workers = None
    if gpus is not None:
        from gradprune.search.gpus import parse_gpus, visible_gpus

        workers = parse_gpus(gpus, visible_gpus())
    if retry and spec.evaluation != "full":
        # halving and screening decide from every point's outcome: a point re-run after the decisions
        # would not be compared again
        raise GradpruneError(f"--retry-failed works with evaluation: full (this search has evaluation: "
                             f"{spec.evaluation}); rerun the search without it, or start it over with --overwrite")
    if spec.sampler != "grid" and spec.n_trials is None and n_trials is None:
        raise RecipeError(f"{path}: sampler {spec.sampler!r} needs n_trials (in the recipe or --n_trials)")
    out = Path(output_dir or spec.output_dir)
    _space(spec)
    if out.exists() and not out.is_dir():
        raise GradpruneError(f"output_dir {str(out)!r} is a file; expected a directory")
    check_writable_dir(out, "output_dir")  # before the storage's lock file or any result is written
    _guard_dir(out, spec, overwrite, storage)
    check_added_columns(out / "search_results.csv", _stored_study(spec, out, storage), spec)
    if storage is not None:
        open_storage(storage, out)  # an unreachable storage fails before anything is written
    report = preflight_search(spec, out)
    out.mkdir(parents=True, exist_ok=True)
    claim_dir(out, spec, path)
    clean_abandoned(out)
    console = Console()
    # Text, not markup: paths and grid values are the user's and may hold [brackets]
    console.print(Text("gradprune search", style="bold") + Text(f" {path}: {spec.describe()} → {out}"))
    print_plain(console, report.describe(), style="dim")
    for warning in report.warnings:
        print_plain(console, f"warning: {warning} (its trials will be failed rows)", style="yellow")
    study, space, retried = open_study(spec, out, storage, retry)
    if retry:
        console.print(f"--retry-failed: {len(retried)} point(s) whose latest attempt failed enqueued again"
                      + (f" (trial(s) {', '.join(map(str, retried))})" if retried else ""), markup=False,
                      highlight=False)
    if workers is not None:
        return _run_gpu_workers(workers, argv or [], spec, study, space, out, console)
    from gradprune.search.worker import Worker
    from gradprune.tracking import start_search

    start_search(spec.base_recipe_dict().get("logger"), study_name(spec), out)  # the trials' tracker group
    worker = Worker(spec, study, space, out, console)
    done = worker.run(max_trials=n_trials)
    csv_path = worker.write_csv()
    print_plain(console, f"this worker ran {done} trial(s), {worker.store.puts} calibration(s); wrote {csv_path}")
    return 0



def _run_gpu_workers(gpus: list[str], argv: list[str], spec: SearchSpec, study, space: dict[str, list[Any]],
                     out: Path, console: Console) -> int:
    """``--gpus``: one worker process per GPU on the study opened here; then the results table."""
    from gradprune.search.gpus import run_workers
    from gradprune.search.study import AttemptsView
    from gradprune.search.table import write_results

    total = len(_all_points(space)) if spec.sampler == "grid" else int(spec.n_trials or 0)
    rc = run_workers(gpus, argv, out, study, space, total, console)
    csv_path = write_results(AttemptsView(study), spec, out)
    console.print(f"{len(gpus)} worker(s) ended; wrote {csv_path}", markup=False, highlight=False, soft_wrap=True)
    return rc
