"""Search recipes: a base recipe (+ overrides), a grid of dotted recipe keys, replicates, sampler.

Every grid value is checked against the recipe schema before any trial runs, so a typo in a key
or a value of the wrong type fails at once with the key and the value named.
"""

from __future__ import annotations

import difflib
import hashlib
import itertools
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from gradprune.errors import RecipeError
from gradprune.recipe import Recipe, apply_overrides, read_yaml, validate_dict

SEED_KEY = "calibration.seed"
# seeds of replicate r: base seed + r * stride (far apart so windows do not overlap by construction)
SEED_STRIDE = 1000


class HalvingSection(BaseModel):
    """Successive halving over evaluation budget (nested subsets of each task's examples)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    min_fraction: float = Field(0.125, gt=0, le=1)
    reduction_factor: int = Field(2, ge=2)
    k_stderr: float = Field(1.0, ge=0)
    # sync: every point finishes a rung before any goes on (grid searches; the default there);
    # async: each trial decides at once against the trials seen so far (ASHA; any sampler)
    schedule: Literal["sync", "async"] | None = None


class ScreenSection(BaseModel):
    """Predictor screening: evaluate n_initial trials, predict the rest, evaluate the top_k."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    n_initial: int = Field(6, ge=2)
    top_k: int = Field(3, ge=1)
    coverage: int = Field(1, ge=0)


class SearchSpec(BaseModel):
    """A whole search recipe."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    base: str
    overrides: list[str] = Field(default_factory=list)
    grid: dict[str, list[Any]] = Field(default_factory=dict)
    replicates: int = Field(1, ge=1)
    sampler: Literal["grid", "random", "tpe"] = "grid"
    n_trials: int | None = Field(None, gt=0)
    seed: int = 0
    output_dir: str = "results/search"
    study_name: str | None = None
    objective: str = "acc_mean"
    evaluation: Literal["full", "halving", "screen"] = "full"
    halving: HalvingSection = Field(default_factory=HalvingSection)
    screen: ScreenSection = Field(default_factory=ScreenSection)
    # resolved at load time
    source: str = ""

    @field_validator("grid")
    @classmethod
    def _grid(cls, v: dict[str, list[Any]]) -> dict[str, list[Any]]:
        for k, vals in v.items():
            if not isinstance(vals, list) or not vals:
                raise ValueError(f"grid.{k}: expected a non-empty list of values")
            if len({json.dumps(x, sort_keys=True) for x in vals}) != len(vals):
                raise ValueError(f"grid.{k}: values repeat: {vals}")
        return v

    def halving_schedule(self) -> str:
        """``halving.schedule`` resolved: sync for a grid search unless asked otherwise, else async."""
        return self.halving.schedule or ("sync" if self.sampler == "grid" else "async")

    def base_recipe_dict(self) -> dict[str, Any]:
        """The base recipe with the search's overrides applied (not yet validated)."""
        return apply_overrides(read_yaml(self.base, "base recipe"), self.overrides)

    def points(self) -> list[dict[str, Any]]:
        """Every grid point (without the replicate seed), in a fixed order; index = config_id."""
        keys = list(self.grid)
        return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*self.grid.values())]

    def replicate_seeds(self, base_seed: int) -> list[int]:
        """The calibration seeds of the replicates, derived from the base recipe's seed."""
        return [base_seed + r * SEED_STRIDE for r in range(self.replicates)]

    def fingerprint(self) -> str:
        """Identifies the search: same fingerprint, same study (resume); different → refuse the dir."""
        d = self.model_dump(exclude={"source", "output_dir", "n_trials"})
        # the halving schedule as it applies: searches without halving keep the fingerprint they had
        # before the key existed, and a halving search resumes only under the schedule it started with
        d["halving"].pop("schedule")
        if self.evaluation == "halving":
            d["halving"]["schedule"] = self.halving_schedule()
        d["base_recipe"] = self.base_recipe_dict()
        return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:16]

    def describe(self) -> str:
        """One line: keys, number of points and trials."""
        n = len(self.points())
        keys = ", ".join(f"{k} ({len(v)})" for k, v in self.grid.items()) or "no grid keys"
        reps = f" × {self.replicates} replicates" if self.replicates > 1 else ""
        return f"{keys}: {n} points{reps} = {n * self.replicates} trials ({self.sampler} sampler)"


def override_list(point: dict[str, Any]) -> list[str]:
    """``key=value`` overrides for one grid point (values as JSON, which YAML reads back exactly)."""
    return [f"{k}={json.dumps(v)}" for k, v in point.items()]


def recipe_for(spec: SearchSpec, point: dict[str, Any]) -> Recipe:
    """The validated recipe of one trial."""
    data = apply_overrides(spec.base_recipe_dict(), override_list(point))
    return validate_dict(data, f"{spec.source} (trial {point})")


def _value_at(recipe: Recipe, key: str) -> Any:
    """The validated value of a dotted key (what the recipe holds after its schema read the YAML value)."""
    obj: Any = recipe.to_dict()
    for part in key.split("."):
        obj = obj.get(part) if isinstance(obj, dict) else None
    return obj


def _check_base(spec: SearchSpec) -> None:
    """``base:`` names the recipe every trial runs, not another search recipe."""
    raw = read_yaml(spec.base, "base recipe")
    if "grid" in raw or "base" in raw:
        own = f" (its own base: {raw['base']})" if "base" in raw else ""
        raise RecipeError(f"{spec.source}: base: {spec.base} is a search recipe (it has "
                          f"{' and '.join(k + ':' for k in ('base', 'grid') if k in raw)}), not a run recipe; "
                          f"base: names the recipe every trial runs{own}")


def _check_points(spec: SearchSpec) -> None:
    """Validate every grid value on its own (names the key and value), then every combination; values
    that are one setting once validated (``16``, ``16.0`` and ``"16"`` for an integer key) are refused,
    since each would run the same trials again."""
    _check_base(spec)
    base = spec.base_recipe_dict()
    validate_dict(base, f"{spec.source}: base recipe {spec.base}")
    for key, vals in spec.grid.items():
        same: dict[str, list[Any]] = {}
        for v in vals:
            try:
                recipe = validate_dict(apply_overrides(base, override_list({key: v})), spec.source)
            except RecipeError as exc:
                msg = str(exc).split(": ", 1)[-1]
                raise RecipeError(f"{spec.source}: grid.{key} value {v!r} is not valid: {msg}") from None
            normalised = _value_at(recipe, key)
            same.setdefault(json.dumps(normalised, sort_keys=True, default=str), []).append(v)
        for text, given in same.items():
            if len(given) > 1:
                raise RecipeError(f"{spec.source}: grid.{key}: the values {', '.join(map(repr, given))} are one "
                                  f"setting ({text}) once checked against the recipe, so its trials would run "
                                  f"{len(given)} times; list each value once")


_RECIPE_SECTIONS = set(Recipe.model_fields)


def _apply_search_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """``grid.<dotted.key>=[...]`` sets one grid entry; ``<recipe section>.key=v`` overrides the base
    recipe for every trial; anything else is a key of the search recipe itself."""
    from gradprune.recipe import parse_override

    data = dict(data)
    rest = []
    for text in overrides:
        key, value, delete = parse_override(text)
        head, _, tail = key.partition(".")
        if head == "grid" and tail:
            grid = dict(data.get("grid") or {})
            grid.pop(tail, None) if delete else grid.__setitem__(tail, value)
            data["grid"] = grid
        elif head in _RECIPE_SECTIONS:
            data["overrides"] = [*(data.get("overrides") or []), text]
        else:
            rest.append(text)
    return apply_overrides(data, rest)


def _check_evaluation(spec: SearchSpec) -> None:
    """``halving`` and ``screen`` evaluate zero-shot accuracy less often: they need acc_mean as the
    objective, zero-shot tasks in every trial's recipe, and (screen) the grid's fixed list of points."""
    if spec.evaluation == "full":
        return
    where = f"{spec.source}: evaluation: {spec.evaluation}"
    if spec.objective != "acc_mean":
        raise RecipeError(f"{where} works on objective acc_mean (got objective: {spec.objective!r})")
    if spec.evaluation == "screen" and spec.sampler != "grid":
        raise RecipeError(f"{where} needs sampler: grid (it screens a fixed set of points; got {spec.sampler!r})")
    if spec.evaluation == "halving" and spec.halving.schedule == "sync" and spec.sampler != "grid":
        raise RecipeError(f"{where}: halving.schedule: sync needs sampler: grid (every point finishes a rung "
                          f"before any goes on, so the points must be known; got {spec.sampler!r}). "
                          f"Use halving.schedule: async")
    for point in spec.points():
        ev = recipe_for(spec, point).eval
        if ev.run not in ("all", "zeroshot") or not ev.tasks:
            raise RecipeError(f"{where} needs zero-shot tasks in every trial (eval.run all or zeroshot, "
                              f"eval.tasks non-empty; got eval.run={ev.run!r} at {point or 'the base recipe'})")


def objective_names(recipe: Recipe) -> set[str]:
    """The metrics a trial of ``recipe`` can report under an evaluation: the names an objective may take."""
    from gradprune.eval.ppl_data import ppl_key

    ev = recipe.eval
    names = {"acc_mean", "acc_norm_mean", "acc_drop", "acc_norm_drop", "ppl", "ppl_ratio", "pruning_ratio"}
    for task in ev.tasks:
        names |= {f"acc_{task}", f"acc_norm_{task}"}
    lens = ev.ppl_seq_len if isinstance(ev.ppl_seq_len, list) else [ev.ppl_seq_len]
    for name in ev.ppl_datasets:
        key = ppl_key(name)
        names |= {f"ppl_{key}", *(f"ppl_{key}_{n}" for n in lens)}
    return names


LOWER_IS_BETTER = ("ppl", "acc_drop", "acc_norm_drop")


def _check_objective(spec: SearchSpec) -> None:
    """The objective is a metric every trial can report: a typo would tell Optuna 0.0 for every trial.
    A sampler that steers (random/tpe stop at n_trials) needs one that is better when higher: the study
    maximizes it."""
    if spec.sampler != "grid" and spec.objective.startswith(LOWER_IS_BETTER):
        raise RecipeError(f"{spec.source}: objective {spec.objective!r} is better when lower, but the study "
                          f"maximizes its objective (sampler {spec.sampler!r} would look for the worst settings); "
                          f"use an accuracy (acc_mean, acc_<task>) or sampler: grid")
    for point in spec.points():
        names = objective_names(recipe_for(spec, point))
        if spec.objective not in names:
            close = difflib.get_close_matches(spec.objective, sorted(names), n=3, cutoff=0.5)
            hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
            at = f" at grid point {point}" if point and len(spec.points()) > 1 else ""
            raise RecipeError(f"{spec.source}: objective {spec.objective!r} is not a metric the trials report{at}."
                              f"{hint} Expected one of: {', '.join(sorted(names))}")


def _check_grid(path: str | Path, data: dict[str, Any]) -> None:
    """A search varies at least one key: an empty grid would run the base recipe once and call it a search."""
    grid = data.get("grid")
    if grid is None or grid == {}:
        state = "is empty" if "grid" in data else "is missing"
        raise RecipeError(f"{path}: grid {state}; a search needs at least one recipe key to vary, e.g. "
                          f"grid: {{pruning.ratio: [0.2, 0.3]}} (to repeat one recipe over calibration seeds: "
                          f"grid: {{calibration.seed: [0, 1000, 2000]}}; to run it once: gradprune run)")


def load_search_spec(path: str | Path, overrides: list[str] | None = None) -> SearchSpec:
    """Load and fully validate a search recipe (base recipe and every grid value)."""
    data = read_yaml(path, "search recipe")
    data = _apply_search_overrides(data, overrides or [])
    if "base" not in data:
        raise RecipeError(f"{path}: a search recipe needs `base: <recipe.yaml>` (path relative to this file)")
    base = Path(str(data["base"]))
    if not base.is_absolute():
        base = Path(path).resolve().parent / base
    data["base"] = str(base)
    data["source"] = str(path)
    _check_grid(path, data)
    from gradprune.recipe import validate_dict as _v

    spec = _v(data, str(path), schema=SearchSpec)
    _check_points(spec)
    _check_evaluation(spec)
    _check_objective(spec)
    return spec
