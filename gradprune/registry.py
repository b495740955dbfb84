"""One generic, typed plugin registry used by every plugin family.

Built-ins are listed explicitly as lazy ``"module:attr"`` targets (imported only when picked);
third-party plugins come from the entry-point group ``gradprune.<family>``. A preset binds
params to a target (``taylor_mix`` = Taylor with ``order: mix``).
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from gradprune.errors import PluginError, did_you_mean

T = TypeVar("T")


class NoParams(BaseModel):
    """Params model of a plugin that takes none."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True)
class Entry:
    """One registered name: what it points to, preset params, and where it came from."""

    name: str
    target: str | Callable[..., Any]
    preset: Mapping[str, Any] = field(default_factory=dict)
    origin: str = "gradprune"
    description: str = ""


def _import_target(target: str) -> Any:
    module_name, _, attr = target.partition(":")
    module = importlib.import_module(module_name)
    obj: Any = module
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


def validation_problems(err: ValidationError, prefix: str, known: Collection[str] | None = None,
                        owner: str = "") -> list[str]:
    """Pydantic's errors as lines that name the dotted key and what is expected; an unknown key gets a
    did-you-mean among ``known`` (a plugin's params), or the list of them. ``owner``: whose keys they are."""
    of = f" of {owner}" if owner else ""
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in (prefix, *e["loc"]) if str(p))
        if e["type"] == "extra_forbidden":
            hint = did_you_mean(str(e["loc"][-1]), known or ())
            if not hint and known is not None:
                hint = f" It takes: {', '.join(known)}." if known else " It takes no params."
            lines.append(f"{loc}: unknown key{of}" + (f".{hint}" if hint else ""))
        elif e["type"] == "missing":  # its input is the whole parent object: noise, not a hint
            lines.append(f"{loc}: required key{of} is missing")
        else:
            lines.append(f"{loc}: {e['msg'].removeprefix('Value error, ')} (got {e.get('input')!r})")
    return lines


def format_validation_error(err: ValidationError, prefix: str) -> str:
    """:func:`validation_problems` on one line."""
    return "; ".join(validation_problems(err, prefix))


class Registry(Generic[T]):
    """A named family of plugins: built-ins, presets, decorators and entry points."""

    def __init__(
        self,
        family: str,
        base_cls: type | str | None = None,
        builtins: Mapping[str, str | tuple[str, Mapping[str, Any]]] | None = None,
        description: str = "",
    ) -> None:
        self.family = family
        self.base_cls = base_cls
        self.description = description
        self.entry_point_group = f"gradprune.{family}"
        self._entries: dict[str, Entry] = {}
        self._loaded: dict[str, Any] = {}
        self._entry_points_read = False
        self.broken: dict[str, str] = {}  # plugin name -> why it failed to load
        for name, spec in (builtins or {}).items():
            target, preset = (spec, {}) if isinstance(spec, str) else spec
            self._entries[name] = Entry(name, target, dict(preset))

    # -- registration -------------------------------------------------------------------------
    def register(self, *names: str, preset: Mapping[str, Any] | None = None, origin: str = "user"):
        """Decorator: ``@REGISTRY.register("name", "alias")`` on a class or factory."""

        def deco(obj: Any) -> Any:
            for n in names:
                self.add(n, obj, preset=preset, origin=origin)
            return obj

        return deco

    def add(self, name: str, target: str | Callable[..., Any], preset: Mapping[str, Any] | None = None,
            origin: str = "user") -> None:
        """Register ``target`` under ``name`` (later registrations of a name replace earlier ones)."""
        self._entries[name] = Entry(name, target, dict(preset or {}), origin)
        self._loaded.pop(name, None)

    @contextlib.contextmanager
    def scoped(self, reread_entry_points: bool = False) -> Iterator[Registry[T]]:
        """A block whose registrations are its own: on exit the registry holds exactly what it held before
        (names, loaded classes, entry points read or not, broken plugins). ``reread_entry_points``: inside,
        only the built-ins are known and the entry points are read again on the next lookup (a test that
        installs a package, or fakes ``importlib.metadata.entry_points``)."""
        saved = (dict(self._entries), dict(self._loaded), self._entry_points_read, dict(self.broken), self.base_cls)
        if reread_entry_points:
            self._entries = {n: e for n, e in self._entries.items() if e.origin == "gradprune"}
            self._loaded = {n: obj for n, obj in self._loaded.items() if n in self._entries}
            self._entry_points_read = False
            self.broken = {}
        try:
            yield self
        finally:
            self._entries, self._loaded, self._entry_points_read, self.broken, self.base_cls = saved

    @contextlib.contextmanager
    def registered(self, name: str, target: str | Callable[..., Any], preset: Mapping[str, Any] | None = None,
                   origin: str = "user") -> Iterator[Registry[T]]:
        """``target`` registered under ``name`` inside the block only (:meth:`add` in a :meth:`scoped` block)."""
        with self.scoped():
            self.add(name, target, preset=preset, origin=origin)
            yield self

    def _read_entry_points(self) -> None:
        if self._entry_points_read:
            return
        self._entry_points_read = True
        for ep in metadata.entry_points(group=self.entry_point_group):
            if ep.name in self._entries:
                continue  # built-ins win; a plugin cannot silently shadow one
            dist = getattr(ep, "dist", None)
            origin = f"entry point ({dist.name})" if dist is not None else "entry point"
            self._entries[ep.name] = Entry(ep.name, ep.value, {}, origin)

    # -- lookup -------------------------------------------------------------------------------
    def names(self) -> list[str]:
        """Every registered name (built-ins, presets, user and entry-point plugins), sorted."""
        self._read_entry_points()
        return sorted(self._entries)

    def entry(self, name: str) -> Entry:
        """The entry for ``name``; unknown names raise a PluginError with close matches."""
        self._read_entry_points()
        if name not in self._entries:
            avail = self.names()
            shown = ", ".join(avail[:20]) + (" …" if len(avail) > 20 else "")
            raise PluginError(f"unknown {self.family} plugin {name!r}.{did_you_mean(name, avail)} Available: {shown}")
        return self._entries[name]

    def get(self, name: str) -> T:
        """The class (or factory) registered under ``name``, imported on first use."""
        if name in self._loaded:
            return self._loaded[name]
        e = self.entry(name)
        try:
            obj = _import_target(e.target) if isinstance(e.target, str) else e.target
        except Exception as exc:  # a broken plugin must not take the rest down
            self.broken[name] = f"{type(exc).__name__}: {exc}"
            raise PluginError(
                f"{self.family} plugin {name!r} ({e.origin}, {e.target}) failed to load: {exc}"
            ) from exc
        base = self.base_cls
        if isinstance(base, str):  # lazy base class, so building a registry imports nothing heavy
            base = self.base_cls = _import_target(base)
        if base is not None and isinstance(obj, type) and not issubclass(obj, base):
            raise PluginError(
                f"{self.family} plugin {name!r} ({e.target}) is not a subclass of {base.__name__}"
            )
        self._loaded[name] = obj
        return obj

    def params_model(self, name: str) -> type[BaseModel]:
        """The plugin's own pydantic params model (``Params`` attribute), or NoParams."""
        return getattr(self.get(name), "Params", NoParams)

    def validate_params(self, name: str, params: Mapping[str, Any] | None, where: str) -> BaseModel:
        """Check ``params`` (merged over the preset) against the plugin's params model; a PluginError
        holds one problem per bad key (``where.<key>: …``), a misspelled key with a did-you-mean."""
        merged = {**self.entry(name).preset, **dict(params or {})}
        model = self.params_model(name)
        try:
            return model.model_validate(merged)
        except ValidationError as err:
            owner = f"{self.family} plugin {name!r}"
            raise PluginError(*validation_problems(err, where, model.model_fields, owner)) from None

    def build(self, name: str, params: Mapping[str, Any] | None = None, where: str | None = None) -> T:
        """Instantiate plugin ``name`` with validated params (``cls(params_model)``); the instance's ``name``
        is set to the registry name, the one key run.json, layers.csv and the CSV columns use."""
        p = self.validate_params(name, params, where or f"{self.family}.{name}.params")
        obj = self.get(name)(p)
        obj.name = name
        return obj

    def describe(self, name: str) -> str:
        """First line of the plugin's docstring (loads it); a load failure is described, not raised."""
        e = self.entry(name)
        try:
            obj = self.get(name)
        except PluginError as exc:
            return f"[failed to load] {exc}"
        doc = (obj.__doc__ or "").strip().splitlines()
        text = doc[0] if doc else ""
        if e.preset:
            text += "  (preset: " + ", ".join(f"{k}={v}" for k, v in e.preset.items()) + ")"
        return text

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __contains__(self, name: object) -> bool:
        self._read_entry_points()
        return name in self._entries
