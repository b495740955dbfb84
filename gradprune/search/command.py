"""``gradprune search``: validate, preflight every grid point, open (or resume) the study, run trials until
the grid is done."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from rich.console import Console

from gradprune.errors import GradpruneError, RecipeError
from gradprune.io import atomic_write_json
from gradprune.search.spec import SEED_KEY, SearchSpec, load_search_spec, recipe_for
from gradprune.search.study import enqueue_grid, file_lock, make_sampler, open_storage

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
    import itertools

    keys = list(space)
    return [dict(zip(keys, c, strict=True)) for c in itertools.product(*space.values())]


def _guard_dir(out: Path, spec: SearchSpec, overwrite: bool, storage: str | None) -> None:
    """One output dir holds one search: the same one resumes, another is refused (or wiped on request)."""
    marker = out / MARKER
    if out.exists() and not out.is_dir():
        raise GradpruneError(f"output_dir {str(out)!r} is a file; expected a directory")
    if marker.exists():
        old = json.loads(marker.read_text()).get("fingerprint")
        if old == spec.fingerprint():
            return
        if not overwrite:
            raise GradpruneError(
                f"output_dir {str(out)!r} holds a different search (fingerprint {old}, this one "
                f"{spec.fingerprint()}). Rerun the original search recipe to resume it, choose another "
                f"--output_dir, or pass --overwrite to delete its results")
        for name in ("study.journal", "search_results.csv", MARKER, "trials", "cache", "halving_decisions.json",
                     "screen_selection.json"):
            p = out / name
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
    elif (out / "search_results.csv").exists() and not overwrite:
        raise GradpruneError(f"output_dir {str(out)!r} holds a search_results.csv from another tool or version; "
                             f"choose another --output_dir or pass --overwrite")


def open_study(spec: SearchSpec, out: Path, storage_url: str | None):
    """Create or load the study; a grid search enqueues its points once."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = open_storage(storage_url, out)
    space = _space(spec)
    name = spec.study_name or f"gradprune-{spec.fingerprint()}"
    with file_lock(out / ".search.lock"):
        try:
            study = optuna.create_study(study_name=name, storage=storage, load_if_exists=True, direction="maximize",
                                        sampler=make_sampler(spec.sampler, space, spec.seed))
        except Exception as exc:
            raise GradpruneError(f"cannot open the Optuna study {name!r}: {type(exc).__name__}: {exc}") from None
        if spec.sampler == "grid":
            enqueue_grid(study, _all_points(space))
    return study, space


def preflight_search(spec: SearchSpec, out: Path | None, **checks: bool):
    """Preflight every grid point's recipe (each model and data set once) and the search's output dir.

    A problem no point escapes is an error; one of some points only comes back as a warning of the
    report, since the other points can run (``checks``: as for :func:`gradprune.preflight.preflight`).
    """
    from gradprune.preflight import preflight_points

    points = [(point, recipe_for(spec, point)) for point in spec.points()]
    return preflight_points(points, out_dir=out, out_key="output_dir", **checks)


def search_command(path: str, overrides: list[str], storage: str | None = None, output_dir: str | None = None,
                   n_trials: int | None = None, overwrite: bool = False) -> int:
    """Entry point of ``gradprune search``."""
    spec = load_search_spec(path, overrides)
    if spec.sampler != "grid" and spec.n_trials is None and n_trials is None:
        raise RecipeError(f"{path}: sampler {spec.sampler!r} needs n_trials (in the recipe or --n_trials)")
    out = Path(output_dir or spec.output_dir)
    _space(spec)
    _guard_dir(out, spec, overwrite, storage)
    if storage is not None:
        open_storage(storage, out)  # an unreachable storage fails before anything is written
    report = preflight_search(spec, out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / MARKER, {"fingerprint": spec.fingerprint(), "source": str(path),
                                     "spec": spec.model_dump(mode="json")})
    console = Console()
    console.print(f"[bold]gradprune search[/] {path}: {spec.describe()} → {out}")
    console.print(report.describe(), style="dim", markup=False, highlight=False, soft_wrap=True)
    for warning in report.warnings:
        console.print(f"warning: {warning} (its trials will be failed rows)", style="yellow", markup=False,
                      highlight=False, soft_wrap=True)
    study, space = open_study(spec, out, storage)
    from gradprune.search.worker import Worker

    worker = Worker(spec, study, space, out, console)
    done = worker.run(max_trials=n_trials)
    csv_path = worker.write_csv()
    console.print(f"this worker ran {done} trial(s), {worker.store.puts} calibration(s); wrote {csv_path}")
    return 0

