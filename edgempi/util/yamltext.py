"""YAML read with limits: config and sweep files, ``--set`` values, and the config a results file stores.

All of them are text a user (or whoever wrote a shared file) controls, so each is read the same
way: small UTF-8 text, no value expanded beyond :data:`MAX_VALUES` through aliases (the "billion
laughs"), and no key given twice in one mapping (PyYAML keeps the last silently, so a forgotten
earlier ``lr:`` would quietly win or lose). Every refusal is one :class:`ConfigError` naming
where the text came from. This module imports nothing of edgempi but its settings, so the
readers of results files can use it without importing the config.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from edgempi.settings import ConfigError

MAX_BYTES = 1 << 20  # a config or sweep file is a page of text; more is a mistake or an attack
MAX_VALUES = 100_000  # values after aliases are expanded: a few hundred in real files
_MERGE = "tag:yaml.org,2002:merge"


class RepeatedKey(yaml.YAMLError):
    """A mapping that names one key twice (the message names it and both lines)."""


class UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a mapping that repeats a key (a ``<<`` merge may still
    be overridden by the mapping's own keys, as YAML intends)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == _MERGE:
                continue
            key, line = self.construct_object(key_node, deep=True), key_node.start_mark.line + 1
            try:
                if key in seen:
                    raise RepeatedKey(f"key {key!r} is given twice (lines {seen[key]} and {line})")
                seen[key] = line
            except TypeError:  # an unhashable key: the base class refuses it
                continue
        return super().construct_mapping(node, deep)


def _expanded_values(node: yaml.Node, memo: dict[int, int], open_: set[int]) -> int:
    """How many values ``node`` becomes once every alias is copied out (aliases share nodes,
    so a few lines can stand for billions); counted, not built. An alias inside the node it
    names expands for ever: more than the limit."""
    key = id(node)
    if key in open_:
        return MAX_VALUES + 1
    if key not in memo:
        open_.add(key)
        children: list[yaml.Node] = []
        if isinstance(node, yaml.SequenceNode):
            children = list(node.value)
        elif isinstance(node, yaml.MappingNode):
            children = [n for pair in node.value for n in pair]
        memo[key] = 1 + sum(_expanded_values(c, memo, open_) for c in children)
        open_.discard(key)
    return memo[key]


def parse(text: str, where: str, what: str = "config file") -> Any:
    """The value of YAML ``text`` (from ``where``, a ``what``), within the limits above."""
    if len(text) > MAX_BYTES:
        raise ConfigError(where, f"larger than {MAX_BYTES >> 20} MiB: not a {what}")
    if "\x00" in text:
        raise ConfigError(where, f"holds NUL bytes: not a {what}")
    try:
        loader = UniqueKeyLoader(text)  # refuses non-printable characters already
        try:
            node = loader.get_single_node()
            if node is not None and _expanded_values(node, {}, set()) > MAX_VALUES:
                raise ConfigError(where, f"expands to more than {MAX_VALUES} values through aliases")
            return None if node is None else loader.construct_document(node)
        finally:
            loader.dispose()
    except RepeatedKey as exc:
        raise ConfigError(where, str(exc)) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(where, f"not valid YAML{at}") from exc
    except RecursionError as exc:
        raise ConfigError(where, "nested too deeply") from exc


def read(path: str | Path, what: str = "config file") -> Any:
    """Read a YAML file that must be small UTF-8 text (see :func:`parse`)."""
    path = Path(path)
    try:
        with path.open("rb") as f:
            data = f.read(MAX_BYTES + 1)
    except OSError as exc:
        raise ConfigError(str(path), f"cannot read {what} ({exc.strerror})") from exc
    if len(data) > MAX_BYTES:
        raise ConfigError(str(path), f"larger than {MAX_BYTES >> 20} MiB: not a {what}")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(str(path), f"not UTF-8 text (byte {data[exc.start]:#04x} at offset {exc.start}): "
                                     f"not a {what}") from exc
    return parse(text, str(path), what)


def value(raw: str, key: str) -> Any:
    """A ``--set KEY=VALUE`` value: YAML, within the same limits; empty text is None."""
    if not raw.strip():
        return None
    try:
        return parse(raw, key, "value")
    except ConfigError as exc:
        reason = "is not valid YAML" if exc.reason.startswith("not valid YAML") else f"{exc.reason}"
        raise ConfigError(key, f"value {raw[:200]!r}: {reason}") from None
