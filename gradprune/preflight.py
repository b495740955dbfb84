"""Preflight: everything a run can check before a weight loads or an evaluation starts, all at once.

A 7B run spends minutes loading the model and evaluating it dense before calibration starts. A data
set that cannot be loaded, a GPU that is not there or a ratio the planner cannot reach would each
surface only then, one at a time, and an output dir that cannot be written only after the whole run.
:func:`preflight` checks all of it from the recipe, the model's config (never its weights), the first
document of each data set and this machine (the memory plan included: :mod:`gradprune.memory`), and
raises one :class:`PreflightError` naming every problem. ``gradprune search`` checks every grid point with :func:`preflight_points`.

The model-bounded recipe values (``calibration.seq_len``, the layer ranges) are checked in one place,
:func:`model_bound_problems`, which ``run_experiment`` also asks before any weight loads: it guards code
that calls ``run_experiment`` directly, without preflight.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gradprune.errors import GradpruneError
from gradprune.pruning.reach import cached_model_shape, reach, unreachable_message
from gradprune.recipe import ModelSection, Recipe


class PreflightError(GradpruneError):
    """Every problem preflight found, in one message; ``problems`` holds them one by one."""

    def __init__(self, problems: Sequence[str]) -> None:
        from gradprune.data.sources import dedupe_hints

        self.problems = dedupe_hints(list(problems))
        if len(self.problems) == 1:
            message = self.problems[0]
        else:
            message = (f"{len(self.problems)} problems found before loading the model: "
                       + "; ".join(f"({i}) {p}" for i, p in enumerate(self.problems, 1)))
        super().__init__(message)


@dataclass
class Report:
    """What preflight checked, what it could not check here (``notes``), and, for a search, the problems
    of some grid points only (``warnings``: those trials will fail, the others can run)."""

    checked: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def describe(self) -> str:
        """One line for the console."""
        text = f"preflight ok in {self.seconds:.1f} s: {', '.join(self.checked) or 'recipe'}"
        return text + "".join(f"; {n}" for n in self.notes)


# ---------------------------------------------------------------------------------------------
# the accelerator


def accelerator_problems(trainer: Any) -> list[str]:
    """Whether ``trainer.accelerator`` exists on this machine with ``trainer.devices`` devices.

    Lightning's own accelerator classes decide (the same ones the Trainer asks); they are imported only
    when the setting could fail somewhere (importing Lightning takes seconds).
    """
    name, devices = str(trainer.accelerator).lower(), trainer.devices
    if name in ("auto", "cpu") and devices in (1, "1", "auto"):
        return []  # accepted on every machine
    from lightning.pytorch import accelerators as acc

    known = {"auto", "gpu", *acc.AcceleratorRegistry.available_accelerators()}
    if name not in known:
        return [f"trainer.accelerator={trainer.accelerator!r} is not a Lightning accelerator; expected one of "
                f"{', '.join(sorted(known))}"]
    kinds: dict[str, tuple[Any, str]] = {"cpu": (acc.CPUAccelerator, "CPU"), "cuda": (acc.CUDAAccelerator, "CUDA GPU"),
                                         "mps": (acc.MPSAccelerator, "Apple MPS GPU"), "tpu": (acc.XLAAccelerator, "TPU")}
    if name == "auto":  # Lightning's order of preference
        name = next((k for k in ("tpu", "mps", "cuda") if kinds[k][0].is_available()), "cpu")
    elif name == "gpu":
        name = next((k for k in ("mps", "cuda") if kinds[k][0].is_available()), "cuda")
    if name not in kinds:
        return []  # a third-party accelerator: the Trainer will judge it
    cls, what = kinds[name]
    if not cls.is_available():
        return [f"trainer.accelerator={trainer.accelerator!r}: no {what} is available on this machine (Lightning's "
                f"{cls.__name__}.is_available() is False); use trainer.accelerator=cpu (or auto), or run where "
                f"there is one"]
    try:
        cls.parse_devices(devices)
    except Exception as exc:  # MisconfigurationException, TypeError, ValueError: all say what is wrong
        count = cls.auto_device_count()
        return [f"trainer.devices={devices!r} cannot be used with trainer.accelerator={trainer.accelerator!r} "
                f"here: {' '.join(str(exc).split())} (this machine has {count} {what} device(s))"]
    return []


# ---------------------------------------------------------------------------------------------
# calibration data and the model's files


def calibration_problems(dataset: Any, key: str = "calibration.dataset") -> list[str]:
    """The calibration source builds and yields a first document (built as ``run.calibration_stage`` does);
    ``key``: the recipe section of another data set checked the same way (``recovery.dataset``)."""
    from gradprune import plugins

    params = dataset.model_dump()
    name = params.pop("name")
    try:
        source = plugins.DATA.build(name, params, key)
        source.key = key
        docs = iter(source.documents())
        try:
            first = next(docs, None)
        finally:
            close = getattr(docs, "close", None)
            if close is not None:
                close()
    except GradpruneError as exc:
        return [str(exc)]
    except Exception as exc:  # a third-party source may raise anything; the run would fail the same way
        return [f"{key} ({name}): cannot be read: {type(exc).__name__}: {' '.join(str(exc).split())}"]
    if first is None:
        return [f"{key.split('.')[0]} data ({source.describe()}) holds no text"]
    return []


def _hub_config_cached(name: str, revision: str | None) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(name, "config.json", revision=revision), str)
    except Exception:  # an id the hub library refuses, a cache it cannot read: not cached
        return False


def _load_tokenizer(path: str, section: ModelSection) -> tuple[Any, list[str]]:
    """The model's tokenizer (None where it cannot be loaded) and the problem that stopped it."""
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(path, revision=section.revision,
                                            trust_remote_code=section.trust_remote_code)
    except Exception as exc:  # OSError, ValueError, and whatever a broken tokenizer file raises
        return None, [f"cannot load the tokenizer of {path!r}: {' '.join(str(exc).split())[:300]}"]
    return tok, []


def window_problems(dataset: Any, tokenizer: Any, seq_len: int, num_samples: int) -> tuple[list[str], str | None]:
    """Whether the calibration text holds ``num_samples`` windows of ``seq_len`` tokens (counted as the draw
    joins it) where that can be counted here (a local file, the embedded corpus); else a note saying it
    is not checked."""
    from gradprune import plugins
    from gradprune.data.windows import available_windows, countable

    params = dataset.model_dump()
    source = plugins.DATA.build(params.pop("name"), params, "calibration.dataset")
    if not countable(source):
        return [], f"windows in calibration.dataset ({params.get('path', dataset.name)}) not counted (not a local file)"
    try:
        n = available_windows(source, tokenizer, seq_len, num_samples)
    except GradpruneError as exc:
        return [str(exc)], None
    if n >= num_samples:
        return [], None
    return [f"calibration: the text ({source.describe()}) holds only {n} window(s) of calibration.seq_len="
            f"{seq_len} tokens; calibration.num_samples={num_samples} asked. Lower calibration.num_samples or "
            f"calibration.seq_len, or use a larger text"], None


# ---------------------------------------------------------------------------------------------
# the checks of one recipe


class Preflight:
    """The checks of :func:`preflight`, remembering what they found: a search asks the same questions
    (one model, one data set) for every grid point, and each is answered once.

    ``data``: load the first calibration document, every perplexity text and task data set, the tokenizer,
    and resolve task names (seconds). ``hardware``: check the accelerator. ``config_required``: a hub
    config that is not cached is fetched, and a failure is a problem; otherwise it is a note.
    """

    def __init__(self, *, data: bool = True, hardware: bool = True, config_required: bool = True) -> None:
        self.data, self.hardware, self.config_required = data, hardware, config_required
        self.memo: dict = {}
        self.checked: dict[str, None] = {}  # ordered set
        self.notes: dict[str, None] = {}

    def _once(self, key: tuple, check: Callable[[], Any]) -> Any:
        if key not in self.memo:
            self.memo[key] = check()
        return self.memo[key]

    def problems(self, recipe: Recipe) -> list[str]:
        """Every problem of ``recipe`` these checks find (empty: none)."""
        found: list[str] = []
        model_key = ("model", json.dumps(recipe.model.model_dump(), sort_keys=True))
        config, model_problems = self._once(model_key, lambda: self._model(recipe.model, model_key))
        found += model_problems
        if config is not None:
            found += self._bounds(recipe, config, model_key)
            if self.hardware and not found:
                found += self._memory(recipe, config)
        if self.data:
            ds_key = ("calibration", json.dumps(recipe.calibration.dataset.model_dump(), sort_keys=True))
            data_problems = self._once(ds_key, lambda: calibration_problems(recipe.calibration.dataset))
            found += data_problems
            self.checked["data sets"] = None
            tok = self.memo.get(("tokenizer", *model_key[1:]), (None, []))[0]
            if not data_problems and tok is not None:
                c = recipe.calibration
                problems, note = self._once((*ds_key, model_key[1], c.seq_len, c.num_samples),
                                            lambda: window_problems(c.dataset, tok, c.seq_len, c.num_samples))
                found += problems
                if note is not None:
                    self.notes[note] = None
        if recipe.recovery is not None:
            from gradprune.recovery.checks import recovery_problems

            rec_key = ("recovery", json.dumps(recipe.recovery.model_dump(), sort_keys=True), model_key)
            found += self._once(rec_key, lambda: recovery_problems(recipe, config))
            if self.data:  # an instruction set's first record is checked against its template here
                ds_key = ("recovery data", json.dumps(recipe.recovery.dataset.model_dump(), sort_keys=True))
                found += self._once(ds_key, lambda: calibration_problems(recipe.recovery.dataset, "recovery.dataset"))
        from gradprune.eval.checks import eval_problems

        found += eval_problems(recipe.eval, config, task_names=self.data, load_data=self.data, memo=self.memo)
        if self.data and recipe.eval.run in ("all", "ppl") and recipe.eval.ppl_datasets:
            self.checked["data sets"] = None
        if self.data and recipe.eval.run in ("all", "zeroshot") and recipe.eval.tasks:
            self.checked["data sets"] = None
        if self.data and recipe.eval.run != "none" and recipe.eval.dense:
            from gradprune.eval.dense_cache import unwritable_reason

            why = self._once(("dense cache",), unwritable_reason)
            if why is not None:
                self.notes[f"warning: the dense metrics will not be cached ({why})"] = None
        if self.hardware:
            trainer_key = ("trainer", recipe.trainer.accelerator, str(recipe.trainer.devices))
            found += self._once(trainer_key, lambda: accelerator_problems(recipe.trainer))
            self.checked[f"accelerator {recipe.trainer.accelerator}"] = None
        return found

    def _model(self, section: ModelSection, model_key: tuple) -> tuple[Any, list[str]]:
        """The model's config (None where it cannot be had) and the problems of the model's files."""
        from gradprune.models.loading import (
            _check_causal_lm,
            _check_not_pruned_checkpoint,
            _load_config,
            resolve_model_path,
        )

        try:
            path = resolve_model_path(section.name_or_path)
            local = Path(path).is_dir()
            if not local and not self.config_required and not _hub_config_cached(path, section.revision):
                self.notes[f"model config of {section.name_or_path!r} not checked (not cached)"] = None
                return None, []
            config = _load_config(path, section)
            _check_causal_lm(path, config)
            from gradprune.models.adapters import get_adapter

            get_adapter(config)
            if local:
                _check_not_pruned_checkpoint(path)
        except GradpruneError as exc:
            return None, [str(exc)]
        self.checked["model config"] = None
        if not self.data:
            return config, []
        tok, problems = self._once(("tokenizer", *model_key[1:]), lambda: _load_tokenizer(path, section))
        return config, problems

    def _bounds(self, recipe: Recipe, config: Any, model_key: tuple) -> list[str]:
        """Recipe values bounded by the model: seq_len, layer ranges, the reachable ratio."""
        ranges = _range_problems(recipe, config)
        found = _seq_len_problems(recipe, config) + ranges
        if ranges or not isinstance(getattr(config, "num_hidden_layers", None), int):
            return found
        p = recipe.pruning
        try:
            shape = self._once(("shape", *model_key[1:]), lambda: cached_model_shape(config))
        except Exception as exc:  # a config transformers cannot build: the load will say more; do not guess
            self.notes[f"pruning.ratio not checked ({type(exc).__name__}: {' '.join(str(exc).split())[:200]})"] = None
            return found
        r = reach(shape, p)
        if r.allows(p.ratio):
            self.checked[f"ratio <= {r.max_ratio:.4f}"] = None
        else:
            found.append(unreachable_message(r, p, recipe.model.name_or_path, len(shape.layers)))
        return found

    def _memory(self, recipe: Recipe, config: Any) -> list[str]:
        """The memory plan on this machine's device: a recipe that fits at no setting the plan may choose is
        refused with the numbers and the knobs (:mod:`gradprune.memory`)."""
        from gradprune.memory.capacity import device_capacity
        from gradprune.memory.watch import fit_recipe

        t = recipe.trainer
        capacity = self._once(("capacity", str(t.accelerator), str(t.devices)), lambda: device_capacity(t))
        try:
            fitted = fit_recipe(recipe, config, capacity)
        except GradpruneError as exc:
            return [str(exc)]
        except Exception as exc:  # a model the plan cannot describe: the run measures, it does not plan
            self.notes[f"memory plan not made ({type(exc).__name__}: {' '.join(str(exc).split())[:200]})"] = None
            return []
        if fitted.problem is not None:
            return [fitted.problem]
        self.checked["memory plan" if capacity is not None else "memory plan (device memory unknown)"] = None
        for note in fitted.notes:
            if "batch_size auto" not in note:  # auto picks its micro-batch per run; the rest is news
                self.notes[note] = None
        return []

    def report(self, started: float) -> Report:
        """The report of everything checked so far."""
        return Report(list(self.checked), list(self.notes), seconds=time.perf_counter() - started)


def model_bound_problems(recipe: Recipe, config: Any) -> list[str]:
    """The recipe values the model's ``config`` bounds: ``calibration.seq_len`` (at most
    ``max_position_embeddings``) and the layer ranges (inside the model)."""
    return _seq_len_problems(recipe, config) + _range_problems(recipe, config)


def _seq_len_problems(recipe: Recipe, config: Any) -> list[str]:
    max_pos = getattr(config, "max_position_embeddings", None)
    if isinstance(max_pos, int) and recipe.calibration.seq_len > max_pos:
        return [f"calibration.seq_len={recipe.calibration.seq_len} is above the model's "
                f"max_position_embeddings={max_pos}"]
    return []


def _range_problems(recipe: Recipe, config: Any) -> list[str]:
    from gradprune.pruning.planner import allowed_layers

    n_layers = getattr(config, "num_hidden_layers", None)
    if not isinstance(n_layers, int):
        return []
    found = []
    for key, rng in (("attention_layers", recipe.pruning.attention_layers), ("mlp_layers", recipe.pruning.mlp_layers)):
        try:
            allowed_layers(n_layers, rng, key)
        except GradpruneError as exc:
            found.append(str(exc))
    return found


def output_problems(out_dir: str | Path, key: str = "output.dir") -> list[str]:
    """The output dir can be created and written (see :func:`gradprune.outputs.check_writable_dir`)."""
    from gradprune.outputs import check_writable_dir

    try:
        check_writable_dir(out_dir, key)
    except GradpruneError as exc:
        return [str(exc)]
    return []


def preflight(recipe: Recipe, *, data: bool = True, out_dir: str | Path | None = None, hardware: bool = True,
              config_required: bool = True) -> Report:
    """Check ``recipe`` before anything heavy; one PreflightError naming every problem found.

    ``out_dir`` (where the results will go) is checked to be creatable and writable. ``data``,
    ``hardware`` and ``config_required`` as for :class:`Preflight`; ``gradprune run`` uses them all.
    """
    started = time.perf_counter()
    checks = Preflight(data=data, hardware=hardware, config_required=config_required)
    problems = checks.problems(recipe)
    if out_dir is not None:
        problems += output_problems(out_dir)
        checks.checked["output dir"] = None
    if problems:
        raise PreflightError(problems)
    if out_dir is not None and recipe.output.save_model:
        checks.notes.update(dict.fromkeys(_space_notes(recipe, out_dir, checks.memo)))
    return checks.report(started)


_DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


def _space_notes(recipe: Recipe, out_dir: str | Path, memo: dict) -> list[str]:
    """A warning where the output dir's disk has less free space than the pruned model will take (the
    dense size less the pruned share, from the model's shape): the run would end unable to save it."""
    from gradprune.files import free_bytes

    shapes = [v for k, v in memo.items() if k[0] == "shape"]
    free = free_bytes(out_dir)
    if not shapes or free is None:
        return []
    needed = shapes[0].total * _DTYPE_BYTES[recipe.model.dtype] * (1 - recipe.pruning.ratio)
    if free >= needed:
        return []
    return [f"warning: {str(out_dir)!r} has {free / 2**20:.3g} MB free; the pruned model (output.save_model) "
            f"needs about {needed / 2**20:.3g} MB: free space before the run ends, or it ends unable to save it"]


def preflight_points(points: Sequence[tuple[dict[str, Any], Recipe]], *, out_dir: str | Path | None = None,
                     out_key: str = "output_dir", data: bool = True, hardware: bool = True,
                     config_required: bool = True) -> Report:
    """Check every grid point's recipe of a search (each model and data set once).

    A problem that leaves no point able to run (the output dir, or one every point shares) is a
    PreflightError; problems of some points only are the report's ``warnings``: those trials will be
    failed rows, the others run.
    """
    started = time.perf_counter()
    checks = Preflight(data=data, hardware=hardware, config_required=config_required)
    per_point = [(point, checks.problems(recipe)) for point, recipe in points]
    common = set.intersection(*(set(found) for _, found in per_point)) if per_point else set()
    labelled: dict[str, None] = {}
    for point, found in per_point:
        for problem in found:
            labelled[problem if problem in common else f"grid point {point}: {problem}"] = None
    fatal = output_problems(out_dir, out_key) if out_dir is not None else []
    if out_dir is not None:
        checks.checked["output dir"] = None
    if fatal or (per_point and all(found for _, found in per_point)):
        raise PreflightError([*fatal, *labelled])
    report = checks.report(started)
    report.warnings = list(labelled)
    return report
