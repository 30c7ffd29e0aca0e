"""The registries of the extensible kinds: methods, compressors, data sets, models and parallel modes.

A plug-in registers itself under a name in the module that defines it
(``@METHODS.register("fedavg")``); a user's own plug-in needs no registration at all: a config
names it by a dotted path, ``package.module:attr``, imported on first use. The built-in entries
are found the same way, by importing the package that holds them on the first lookup, so that
this module (and ``config.py``, which reads sections through it) imports none of them. An entry
whose module needs torch to be imported (a model) is registered by its dotted path
(:meth:`Registry.add_path`), so that checking a config that names it imports no torch.
"""
from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar, cast

from edgempi.settings import ConfigError, Settings

T = TypeVar("T")


class Registry(Generic[T]):
    """Names → entries of one kind. ``key`` is the config key that names an entry
    (``algorithm.name``); ``package`` holds the built-in entries; ``default`` is the name a
    section without one takes."""

    def __init__(self, key: str, package: str, default: str) -> None:
        self.key, self.package, self.default = key, package, default
        self._entries: dict[str, T] = {}
        self._loaded = False

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: file ``entry`` under ``name`` (a plug-in's only registration step)."""
        def add(entry: T) -> T:
            if name in self._entries and self._entries[name] is not entry:
                raise ValueError(f"{self.key}: {name!r} is registered twice")
            self._entries[name] = entry
            return entry
        return add

    def add(self, name: str, entry: T) -> None:
        """Register an entry that is not a class or function of its own (e.g. a record)."""
        self.register(name)(entry)

    def add_path(self, name: str, path: str) -> None:
        """Register the object at ``package.module:attr`` under ``name``, imported on first
        :meth:`get`: knowing the name costs no import of its module."""
        self.register(name)(_Deferred(path))  # type: ignore[arg-type]

    def _load(self) -> None:
        if not self._loaded:
            self._loaded = True
            importlib.import_module(self.package)

    def names(self) -> tuple[str, ...]:
        self._load()
        return tuple(self._entries)

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __contains__(self, name: object) -> bool:
        return name in self.names()

    def entries(self) -> dict[str, T]:
        return {name: self.get(name) for name in self.names()}

    def get(self, name: str) -> T:
        """The entry called ``name``, or the object a ``package.module:attr`` path names."""
        self._load()
        if name in self._entries:
            entry = self._entries[name]
            if isinstance(entry, _Deferred):
                entry = self._entries[name] = self._import(entry.path)
            return entry
        if ":" in name:
            return self._import(name)
        raise ConfigError(self.key, f"unknown value {name!r} (choose from {', '.join(self._entries)}, "
                                    "or name your own as package.module:attr)")

    def check(self, name: str) -> None:
        """Refuse an unknown name or a dotted path that does not import; a registered name is
        accepted without importing its module (a config check imports no torch)."""
        if name not in self.names():
            self.get(name)

    def _import(self, path: str) -> T:
        module_name, _, attr = path.partition(":")
        if not (all(part.isidentifier() for part in module_name.split(".")) and attr.isidentifier()):
            raise ConfigError(self.key, f"{path!r} is not a dotted path package.module:attr (Python names joined by "
                                        "single dots, one colon, one name)")
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise ConfigError(self.key, f"cannot import {module_name!r} for {path!r} ({exc})") from exc
        except Exception as exc:  # the user's module failed while it was imported
            raise ConfigError(self.key, f"importing {module_name!r} for {path!r} failed "
                                        f"({type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:200]})") from exc
        try:
            return getattr(module, attr)
        except AttributeError:
            raise ConfigError(self.key, f"{module_name!r} has no {attr!r}") from None


@dataclasses.dataclass(frozen=True)
class _Deferred:
    """A registered entry not imported yet: its ``package.module:attr`` path."""

    path: str


class SettingsRegistry(Registry[T]):
    """A registry whose entries bring a ``Settings`` dataclass (methods, compressors, data sets):
    a config section is read into the settings class its ``name`` picks. ``base``, the
    ``package.module:attr`` of a settings class, is what every entry's derives from and what an
    entry that declares none takes (a data set's loader function needs no keys of its own)."""

    def __init__(self, key: str, package: str, default: str, base: str | None = None) -> None:
        super().__init__(key, package, default)
        self.base = base

    def settings_class(self, name: str) -> type[Settings]:
        cls = getattr(self.get(name), "Settings", None)
        base = Settings if self.base is None else cast(type[Settings], self._import(self.base))
        if cls is None and self.base is not None:
            return base
        if not (isinstance(cls, type) and issubclass(cls, base)):
            raise ConfigError(self.key, f"{name!r} declares no Settings dataclass derived from "
                                        f"{base.__module__}.{base.__name__}")
        return cls

    def default_settings(self) -> Settings:
        return self.settings_class(self.default)(name=self.default)

    def foreign_fields(self, chosen: type[Settings]) -> dict[str, tuple[dataclasses.Field, list[str]]]:
        """Keys of the other registered entries that ``chosen`` does not take: key → (a field
        declaring it, the names of the entries that take it)."""
        own = {f.name for f in dataclasses.fields(chosen)}
        found: dict[str, tuple[dataclasses.Field, list[str]]] = {}
        for name in self.names():
            for f in dataclasses.fields(self.settings_class(name)):
                if f.name not in own:
                    found.setdefault(f.name, (f, []))[1].append(name)
        return found


METHODS: SettingsRegistry[Any] = SettingsRegistry("algorithm.name", "edgempi.algorithms", default="large_batch")
COMPRESSORS: SettingsRegistry[Any] = SettingsRegistry("compression.name", "edgempi.compression", default="none")
DATASETS: SettingsRegistry[Any] = SettingsRegistry("data.name", "edgempi.data", default="fashion-mnist",
                                                   base="edgempi.data.settings:DataSettings")
MODELS: Registry[Any] = Registry("model.name", "edgempi.models", default="lenet5")
MODES: Registry[Any] = Registry("parallel.mode", "edgempi.parallel", default="data")
