"""Recipes: YAML → dotted ``key=value`` / ``~key`` overrides → a validated, frozen ``Recipe``.

Unknown keys anywhere (file or command line) give the same error: the dotted path and a
did-you-mean. Plugin ``params`` blocks are checked against each plugin's own params model
(:mod:`gradprune.plugin_sections`). Every problem of a recipe is reported at once, one per line.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any, Literal, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from gradprune import plugin_sections as ps
from gradprune.errors import RecipeError, did_you_mean
from gradprune.original_names import ORIGINAL_KEYS
from gradprune.plugin_sections import DatasetSection, PluginSection, RecoverySection


class Section(BaseModel):
    """Base of every recipe section: unknown keys are errors, values are frozen after loading."""

    # NaN and ±inf are no setting (YAML's .nan / .inf): refused with the key named, not deep in a stage
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class ModelSection(Section):
    """Which model to prune: a hub id, a local dir, or ``embedded`` (the shipped tiny model)."""

    name_or_path: str = "embedded"
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    trust_remote_code: bool = False
    revision: str | None = None


class CalibrationSection(Section):
    """How the calibration windows are drawn and batched."""

    dataset: DatasetSection = Field(default_factory=DatasetSection)
    seq_len: int = Field(64, gt=0)
    num_samples: int = Field(256, gt=0)
    #: samples per forward/backward pass; "auto": the largest the memory plan fits on the device (scores and
    #: statistics do not depend on the split; per-sample estimators always run one sample at a time)
    batch_size: int | Literal["auto"] = 8
    seed: int = Field(0, ge=0)  # numpy and torch take non-negative seeds
    #: recompute each decoder layer's activations in the backward pass (transformers' activation
    #: checkpointing): activation memory of one layer instead of all, same gradients, ~1/3 more compute
    gradient_checkpointing: bool = False
    #: micro-batches between two host-side checks of the losses and gradient norms (each one waits for the
    #: device; a non-finite value is reported at the next check, naming its micro-batch and layer)
    check_every: int = Field(16, gt=0)

    @field_validator("batch_size")
    @classmethod
    def _batch_size(cls, v: int | str) -> int | str:
        if isinstance(v, int) and v < 1:
            raise ValueError("batch_size must be greater than 0 (an integer), or 'auto'")
        return v


class StatsSection(Section):
    """Per-layer gradient statistics (collectors by registry name, and their params) and the
    extreme-pruning threshold."""

    collectors: list[str] = Field(default_factory=lambda: list(ps.DEFAULT_COLLECTORS))
    #: params of a listed collector, by its name: ``{grad_quantile: {q: 0.9}}``
    params: dict[str, dict[str, Any]] = Field(default_factory=dict)
    extreme_threshold: float = Field(0.8, gt=0, le=1)

    @field_validator("collectors")
    @classmethod
    def _unique(cls, v: list[str]) -> list[str]:
        dupes = sorted({c for c in v if v.count(c) > 1})
        if dupes:
            raise ValueError(f"{', '.join(dupes)} listed more than once (the second would overwrite the first)")
        return v


class PruningSection(Section):
    """Target ratio (fraction of all model params), scope and where pruning may happen."""

    ratio: float = Field(0.2, gt=0, lt=1)
    scope: Literal["global", "local"] = "global"
    #: inclusive-exclusive [start, end); end null = the model's last layer included, a negative end counts
    #: from the end ([3, -1] on 32 layers = [3, 31), LLM-Pruner's default); None = all layers
    attention_layers: tuple[int, int | None] | None = None
    mlp_layers: tuple[int, int | None] | None = None
    prune_attention: bool = True
    prune_mlp: bool = True
    min_keep: int = Field(1, ge=0)
    round_to: int = Field(1, ge=1)

    @field_validator("attention_layers", "mlp_layers")
    @classmethod
    def _range(cls, v: tuple[int, int | None] | None) -> tuple[int, int | None] | None:
        if v is None:
            return v
        start, end = v
        if start < 0 or (end is not None and end >= 0 and not start < end):
            raise ValueError("expected [start, end) with 0 <= start < end (end: null for the last layer, or "
                             "negative to count from the end)")
        return v


DEFAULT_TASKS = ["boolq", "piqa", "hellaswag", "winogrande", "arc_easy", "arc_challenge", "openbookqa"]


class EvalSection(Section):
    """What to evaluate after pruning (and on the dense model, cached)."""

    run: Literal["all", "ppl", "zeroshot", "none"] = "all"
    ppl_datasets: list[str] = Field(default_factory=lambda: ["wikitext2", "ptb"])
    ppl_seq_len: int | list[int] = 128
    ppl_max_windows: int | None = Field(None, gt=0)
    tasks: list[str] = Field(default_factory=lambda: list(DEFAULT_TASKS))
    task_dir: str | None = None  # extra lm-eval task YAML dir; "embedded" = the shipped tiny tasks
    num_fewshot: int = Field(0, ge=0)
    batch_size: int | Literal["auto"] = "auto"
    #: where lm-eval's batch-size search starts under batch_size: auto ("auto": what half the GPU memory free
    #: at evaluation holds, gradprune/eval/batching.py; 64 on the CPU)
    max_batch_size: int | Literal["auto"] = "auto"
    limit: int | float | None = None
    dense: bool = True  # evaluate the dense model too (cached by model identity)
    #: "auto": spread the model rank 0 gathers after FSDP calibration over every GPU it sees (accelerate,
    #: whole decoder layers per GPU) for surgery and evaluation; null: rank 0's own device
    device_map: Literal["auto"] | None = None

    @field_validator("batch_size", "max_batch_size")
    @classmethod
    def _batch_size(cls, v: int | str) -> int | str:
        if isinstance(v, int) and v < 1:
            raise ValueError("must be an integer >= 1 or 'auto'")
        return v
    #: cheap proxies on held-out windows (gradprune/eval/proxies.py); 0 = none
    proxy_windows: int = Field(32, ge=0)
    proxy_seq_len: int = Field(128, ge=2)
    proxy_text: str | None = None  # an eval.ppl_datasets-style name; default: the first of ppl_datasets

    @field_validator("limit")
    @classmethod
    def _limit(cls, v: int | float | None) -> int | float | None:
        if v is not None and v <= 0:
            raise ValueError("limit must be > 0 (a count of examples, or a fraction in (0, 1])")
        return v

    @field_validator("ppl_seq_len")
    @classmethod
    def _ppl_len(cls, v: int | list[int]) -> int | list[int]:
        vals = v if isinstance(v, list) else [v]
        if not vals or any(x <= 0 for x in vals):
            raise ValueError("ppl_seq_len must be a positive int or a non-empty list of them")
        return v


#: Lightning precisions that hold the weights in one dtype throughout, and that dtype's recipe name
TRUE_PRECISION_DTYPE = {"32-true": "float32", "bf16-true": "bfloat16", "16-true": "float16"}
#: autocast precisions: the weights stay in model.dtype, only the calibration forward is cast
MIXED_PRECISIONS = ("bf16-mixed",)


class TrainerSection(Section):
    """Lightning Trainer settings for calibration (the device they name is used for the whole run)."""

    accelerator: str = "auto"
    devices: int | str | list[int] = 1
    strategy: str = "auto"
    precision: str = "32-true"
    num_nodes: int = Field(1, ge=1)
    #: torch's float32 matmul precision on CUDA for the whole run ("high": TF32 tensor cores); "auto" is
    #: "high" with bf16-mixed (an fp32 model whose calibration already computes in bf16), else "highest"
    matmul_precision: Literal["auto", "highest", "high", "medium"] = "auto"

    @field_validator("precision")
    @classmethod
    def _precision(cls, v: str) -> str:
        if v == "16-mixed":
            raise ValueError("'16-mixed' scales the loss (GradScaler), so every gradient, score and statistic "
                             "would be multiplied by the loss scale; use 'bf16-mixed', or 'bf16-true'/'16-true' "
                             "with the matching model.dtype")
        if v not in TRUE_PRECISION_DTYPE and v not in MIXED_PRECISIONS:
            known = ", ".join([*TRUE_PRECISION_DTYPE, *MIXED_PRECISIONS])
            raise ValueError(f"expected one of {known}")
        return v

    @field_validator("strategy")
    @classmethod
    def _strategy(cls, v: str, info: Any) -> str:  # info: pydantic ValidationInfo (devices is validated first)
        from gradprune.parallel import check_strategy_devices, strategy_refusal

        why = strategy_refusal(v)  # checked here, not when calibration starts after the model has loaded
        if why is not None:
            raise ValueError(f"{v!r} {why}")
        devices, accelerator = info.data.get("devices", 1), str(info.data.get("accelerator", "auto"))
        why = check_strategy_devices(v, devices, accelerator)
        if why is not None:
            raise ValueError(f"{v!r} {why}")
        return v


class OutputSection(Section):
    """Where results go and whether the pruned model is saved."""

    dir: str = "results/run"
    save_model: bool = False


class Recipe(Section):
    """A whole pruning experiment. Every section has defaults; the file overrides them."""

    model: ModelSection = Field(default_factory=ModelSection)
    calibration: CalibrationSection = Field(default_factory=CalibrationSection)
    importance: PluginSection = Field(default_factory=lambda: PluginSection(name="taylor"))
    normalizer: PluginSection = Field(default_factory=lambda: PluginSection(name="zscore"))
    stats: StatsSection = Field(default_factory=StatsSection)
    pruning: PruningSection = Field(default_factory=PruningSection)
    eval: EvalSection = Field(default_factory=EvalSection)
    trainer: TrainerSection = Field(default_factory=TrainerSection)
    output: OutputSection = Field(default_factory=OutputSection)
    #: training after pruning (gradprune/recovery/); None: the run stops at the untuned model
    recovery: RecoverySection | None = None
    #: experiment tracker (loggers registry: mlflow, tensorboard, wandb, csv) with its params; off by default
    logger: PluginSection | None = None

    @model_validator(mode="after")
    def _something_to_prune(self) -> Recipe:
        if not (self.pruning.prune_attention or self.pruning.prune_mlp):
            raise ValueError("pruning.prune_attention and pruning.prune_mlp are both false: nothing to prune")
        return self

    @model_validator(mode="after")
    def _device_map_needs_fsdp(self) -> Recipe:
        from gradprune.parallel import is_fsdp

        t = self.trainer
        if not is_fsdp(t) and self.eval.device_map is not None:
            raise ValueError("eval.device_map: auto spreads the model that FSDP calibration gathers; with "
                             f"trainer.strategy={t.strategy!r} the model is calibrated on one device and is "
                             "evaluated there (set trainer.strategy: fsdp, or drop eval.device_map)")
        return self

    @model_validator(mode="after")
    def _recovery_fits(self) -> Recipe:
        from gradprune.parallel import device_count, settle_strategy

        r, t = self.recovery, self.trainer
        if r is None:
            return self
        if r.save_merged and not self.output.save_model:
            raise ValueError("recovery.save_merged saves the merged model beside the pruned one: it needs "
                             "output.save_model: true")
        one = device_count(t.devices, t.accelerator) == 1 and t.num_nodes == 1
        if not one or settle_strategy(t.strategy, t.devices, t.accelerator).lower() in ("ddp", "fsdp"):
            raise ValueError(f"recovery trains on the one device that holds the pruned model (rank 0's); "
                             f"trainer.strategy={t.strategy!r}, devices={t.devices!r}, num_nodes={t.num_nodes} "
                             f"start several processes; with a recovery section use trainer.devices: 1 (calibration then "
                             f"runs on that device too)")
        return self

    @model_validator(mode="after")
    def _one_dtype(self) -> Recipe:
        # A '-true' precision whose dtype differs from model.dtype would convert the model during
        # calibration: the dense baseline would be scored in one dtype and the pruned model in another.
        p, dtype = self.trainer.precision, self.model.dtype
        want = TRUE_PRECISION_DTYPE.get(p)
        if want is not None and want != dtype:
            raise ValueError(
                f"trainer.precision={p!r} computes in {want} but model.dtype is {dtype!r}: the dense and the "
                f"pruned model would be evaluated in different dtypes. Set model.dtype: {want}, or "
                f"trainer.precision: {_precision_for(dtype)} (the model is loaded, calibrated, pruned and "
                f"evaluated in model.dtype)")
        if p in MIXED_PRECISIONS and dtype == "float16":
            raise ValueError(f"trainer.precision={p!r} autocasts to bfloat16 but model.dtype is 'float16'; "
                             f"use trainer.precision: 16-true")
        return self

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict of the resolved recipe."""
        return self.model_dump(mode="json")


def _precision_for(dtype: str) -> str:
    return next(p for p, d in TRUE_PRECISION_DTYPE.items() if d == dtype)


# ---------------------------------------------------------------------------------------------
# loading and overrides


MAX_YAML_DEPTH = 100  # nesting a recipe never needs; far deeper would end in a RecursionError


class _YamlProblem(yaml.YAMLError):
    """A document :class:`RecipeLoader` refuses: ``line`` (1-based) and what is wrong there."""

    def __init__(self, line: int, problem: str) -> None:
        super().__init__(problem)
        self.line, self.problem = line, problem


class RecipeLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a key repeated in one mapping (PyYAML keeps the last value
    without a word) and nesting deeper than MAX_YAML_DEPTH levels."""

    _depth = 0

    def compose_node(self, parent, index):  # noqa: D102 - PyYAML's hook, one call per nested node
        self._depth += 1
        try:
            if self._depth > MAX_YAML_DEPTH:
                mark = self.peek_event().start_mark
                raise _YamlProblem(mark.line + 1, f"nested deeper than {MAX_YAML_DEPTH} levels; a recipe needs "
                                                  f"a few (section, key, value)")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node, deep=False):  # noqa: D102
        first: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *base` may be overridden by explicit keys
                continue
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            try:
                seen = first.get(key)
            except TypeError:  # an unhashable key: SafeLoader's own error says so
                break
            if seen is not None:
                raise _YamlProblem(line, f"key {key!r} appears twice in one mapping (first on line {seen}); "
                                         f"YAML would keep only the last value: remove one")
            first[key] = line
        return super().construct_mapping(node, deep=deep)


def read_yaml(path: str | Path, what: str = "recipe") -> dict[str, Any]:
    """Read a YAML mapping with :class:`RecipeLoader`; every failure is a RecipeError naming the file."""
    p = Path(path)
    if not p.exists():
        raise RecipeError(f"{what} file {str(p)!r} does not exist")
    if p.is_dir():
        raise RecipeError(f"{what} path {str(p)!r} is a directory; expected a YAML file")
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise RecipeError(f"cannot read {what} file {str(p)!r}: {exc}") from None
    try:
        data = yaml.load(text, Loader=RecipeLoader)  # noqa: S506 - a SafeLoader subclass
    except _YamlProblem as exc:
        raise RecipeError(f"{what} file {str(p)!r}, line {exc.line}: {exc.problem}") from None
    except yaml.YAMLError as exc:
        raise RecipeError(f"{what} file {str(p)!r} is not valid YAML: {exc}") from None
    if data is None:
        raise RecipeError(f"{what} file {str(p)!r} is empty; expected a mapping of sections")
    if not isinstance(data, dict):
        raise RecipeError(f"{what} file {str(p)!r}: expected a mapping of sections, got {type(data).__name__}")
    return data


def parse_override(text: str) -> tuple[str, Any, bool]:
    """``a.b=1`` → (``a.b``, 1, False); ``~a.b`` → (``a.b``, None, True). Values are YAML scalars."""
    if text.startswith("~"):
        key = text[1:].strip()
        if not key:
            raise RecipeError(f"override {text!r}: expected ~section.key")
        return key, None, True
    if "=" not in text:
        raise RecipeError(f"override {text!r} has no '=': expected dotted.key=value, e.g. pruning.ratio=0.3")
    key, _, raw = text.partition("=")
    key = key.strip()
    if not key:
        raise RecipeError(f"override {text!r}: the key before '=' is empty")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key, value, False


def _known_keys(model: type[BaseModel] | None) -> list[str]:
    return list(model.model_fields) if model is not None else []


def _submodel(model: type[BaseModel] | None, key: str) -> type[BaseModel] | None:
    if model is None or key not in model.model_fields:
        return None
    ann = model.model_fields[key].annotation
    # an optional section (``RecoverySection | None``) is its section
    found = [a for a in (get_args(ann) or (ann,)) if isinstance(a, type) and issubclass(a, BaseModel)]
    return found[0] if len(found) == 1 else None


def apply_overrides(data: dict[str, Any], overrides: list[str], schema: type[BaseModel] = Recipe) -> dict[str, Any]:
    """Apply dotted overrides to a recipe dict (a copy); unknown keys are caught by validation. Every bad
    override is named in one RecipeError."""
    out, problems = _apply(data, overrides)
    if problems:
        raise RecipeError(*problems)
    return out


def _apply(data: dict[str, Any], overrides: list[str]) -> tuple[dict[str, Any], list[str]]:
    """The overridden copy and the overrides that could not be applied (a plugin switched by an override
    keeps only the params that fit it: :func:`gradprune.plugin_sections.carry_params`)."""
    out, problems, keys = copy.deepcopy(data), [], []
    for text in overrides:
        try:
            keys.append(_apply_one(out, text))
        except RecipeError as exc:
            problems += exc.lines()
    ps.carry_params(data, out, keys)
    return out, problems


def _apply_one(out: dict[str, Any], text: str) -> str:
    key, value, delete = parse_override(text)
    parts = key.split(".")
    node: Any = out
    for i, part in enumerate(parts[:-1]):
        nxt = node.get(part) if isinstance(node, dict) else None
        if nxt is None:
            nxt = {}
            node[part] = nxt
        elif not isinstance(nxt, dict):
            raise RecipeError(f"override {text!r}: {'.'.join(parts[: i + 1])} is a value, not a section")
        node = nxt
    if delete:
        node.pop(parts[-1], None)
    else:
        node[parts[-1]] = value
    return key


def _section_hint(key: str, value: Any, schema: type[BaseModel]) -> str:
    """A top-level key that is a field of a section (``seq_len``) or a name of the original tool
    (``taylor_seq_len``, also a search_results.csv column): the dotted recipe key to use instead."""
    if key in ORIGINAL_KEYS:
        shown = "..." if isinstance(value, (dict, list)) or value is None else value
        return (f" {key!r} is the original tool's name; the recipe key is {ORIGINAL_KEYS[key]!r}: "
                f"{ORIGINAL_KEYS[key]}={shown}")
    owners = [name for name in schema.model_fields if key in _known_keys(_submodel(schema, name))]
    return f" Did you mean {', '.join(repr(f'{o}.{key}') for o in owners)}?" if owners else ""


def _unknown_key_message(err: dict[str, Any], schema: type[BaseModel]) -> str:
    loc = [str(p) for p in err["loc"]]
    parent: type[BaseModel] | None = schema
    for p in loc[:-1]:
        parent = _submodel(parent, p)
    hint = _section_hint(loc[0], err.get("input"), schema) if len(loc) == 1 else ""
    hint = hint or did_you_mean(loc[-1], _known_keys(parent))
    return f"{'.'.join(loc)}: unknown key.{hint}"


# a union member's tag in a pydantic error location ("int", "literal['auto']", "list[int]")
_UNION_TAG = re.compile(r"^(int|float|str|bool|none|[a-z-]+\[.*\])$")


def _schema_problems(err: ValidationError, schema: type[BaseModel]) -> list[str]:
    """One line per bad key; the members of a union a value fits none of are joined into one line."""
    by_key: dict[str, list[str]] = {}
    got: dict[str, str] = {}
    for e in err.errors():
        if e["type"] == "extra_forbidden":
            by_key.setdefault(_unknown_key_message(e, schema), [])
            continue
        loc = ".".join(str(p) for p in e["loc"] if not (isinstance(p, str) and _UNION_TAG.match(p)))
        by_key.setdefault(loc or "(recipe)", []).append(e["msg"].removeprefix("Value error, "))
        # a whole-section check would echo the entire section as its input: leave it out
        if loc and not isinstance(e.get("input"), dict):
            got[loc] = f" (got {e.get('input')!r})"
    return [f"{key}: {', or '.join(dict.fromkeys(msgs))}{got.get(key, '')}" if msgs else key
            for key, msgs in by_key.items()]


def validate_dict(data: dict[str, Any], source: str, schema: type[BaseModel] = Recipe,
                  earlier: list[str] | None = None) -> Any:
    """Validate a recipe dict into ``schema``; one RecipeError names every problem (``earlier`` ones, e.g.
    bad overrides, first), each with ``source`` and the dotted key."""
    problems = []
    recipe = None
    try:
        recipe = schema.model_validate(data)
    except ValidationError as err:
        problems += _schema_problems(err, schema)
    if issubclass(schema, Recipe) and isinstance(data, dict):
        # params are checked (importing each plugin) once the schema holds: a typo still fails fast
        problems += ps.plugin_problems(data, load=not problems and not earlier)
    if problems or earlier:
        raise RecipeError(*(earlier or []), *(f"{source}: {p}" for p in problems))
    return recipe


def load_recipe(path: str | Path, overrides: list[str] | None = None) -> Recipe:
    """Load, override and validate a recipe file."""
    data = read_yaml(path)
    data, problems = _apply(data, overrides or [])
    src = str(path) + (" (with command-line overrides)" if overrides else "")
    return validate_dict(data, src, earlier=problems)
