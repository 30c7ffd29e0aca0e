"""What every plug-in's settings share: the one-line error, the checks, and the base class.

A method or a compressor declares its keys as a dataclass derived from :class:`Settings`, with
its own :meth:`Settings.check`; ``config.py`` reads a section into the class its ``name`` picks
(:mod:`edgempi.registry`) and never names a method or a compressor itself. This module imports
nothing of edgempi, so every plug-in can use it without an import cycle.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any


def printable(text: str) -> str:
    """``text`` with every character that would break or hide a line (newline, carriage return,
    terminal escapes) written as its escape: what a file held, shown on one line."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


class ConfigError(ValueError):
    """A problem with the user's configuration; printed as one line, exit code 2."""

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(printable(f"{key}: {reason}"))
        self.key = key
        self.reason = reason


def require(condition: bool, key: str, reason: str) -> None:
    """Raise a :class:`ConfigError` for ``key`` unless ``condition`` holds."""
    if not condition:
        raise ConfigError(key, reason)


def one_of(value: str, options: Iterable[str], key: str) -> None:
    options = tuple(options)
    require(value in options, key, f"unknown value {value!r} (choose from {', '.join(options)})")


def exclusive(default: Any, reason: str) -> Any:
    """A field that changes what a run does when set: setting it for a method (or compressor)
    that does not take it is an error saying ``reason``, not a silent no-op.

    Other keys of other plug-ins are left out quietly, so one config file can switch methods
    with ``--set algorithm.name=...`` (the quickstart keeps ``local_steps`` for ``fedavg``)."""
    return dataclasses.field(default=default, metadata={"exclusive": reason})


@dataclass
class Settings:
    """A plug-in's section: its registered ``name`` (or ``package.module:attr``) and its keys."""

    name: str = ""
    """Which one: a registered name (below), or ``package.module:attr`` of your own."""

    def check(self, cfg: Any) -> None:
        """Check this section's values and the rules that span sections on its behalf
        (``cfg``: the whole ``edgempi.config.RunConfig``, not imported here)."""

    @classmethod
    def section(cls) -> str:
        """The config section this kind of settings is read from (for error keys)."""
        return "config"

    def key(self, field_name: str) -> str:
        return f"{self.section()}.{field_name}"
