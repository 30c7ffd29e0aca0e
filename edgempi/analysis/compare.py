"""What tells runs apart: the config keys that differ, groups of runs, and labels from both.

Plots and tables name a run by what is special about it among the runs shown, not by its
whole config, so a sweep over ``train.lr`` reads as ``lr=0.1`` and ``lr=0.01``.
"""
from __future__ import annotations

from typing import Any, Iterable, Sequence

import yaml

from edgempi.analysis.runs import Run

# Keys that differ between runs without changing what was measured.
IGNORED = ("output.dir", "output.name")


def group_keys(group_by: str | Sequence[str] | None) -> tuple[str, ...]:
    """``"algorithm.name,train.lr"`` or a list of keys → a tuple of keys (empty: no grouping)."""
    if group_by is None:
        return ()
    if isinstance(group_by, str):
        group_by = group_by.split(",")
    keys = tuple(k.strip() for k in group_by if k.strip())
    if not keys:
        raise ValueError("group_by: empty key")
    return keys


def differing_keys(runs: Sequence[Run], exclude: Iterable[str] = ()) -> list[str]:
    """Config keys whose value is not the same in every run, in the configs' order."""
    skip = set(IGNORED) | set(exclude)
    keys = [k for k in dict.fromkeys(k for r in runs for k in r.config) if k not in skip]
    return [k for k in keys if len({_hashable(r.config.get(k)) for r in runs}) > 1]


def _hashable(value: Any) -> Any:
    return repr(value) if isinstance(value, (dict, list)) else value


def group(runs: Sequence[Run], keys: Sequence[str]) -> list[tuple[tuple, list[Run]]]:
    """Runs grouped by their values of ``keys``, groups in order of first appearance."""
    missing = [k for k in keys if not any(k in r.config or k in r.attrs for r in runs)]
    if runs and missing:
        known = ", ".join(sorted({k for r in runs for k in r.config}))
        raise ValueError(f"group_by: no run has key {missing[0]!r} (keys: {known})")
    groups: dict[tuple, list[Run]] = {}
    for run in runs:
        groups.setdefault(tuple(_hashable(run.value(k)) for k in keys), []).append(run)
    return list(groups.items())


def fmt_value(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, tuple):
        return "[" + ",".join(fmt_value(v) for v in value) + "]"
    return str(value)


def short_names(keys: Sequence[str]) -> dict[str, str]:
    """The last part of each dotted key, or the whole key where the last parts collide."""
    last = [k.rsplit(".", 1)[-1] for k in keys]
    return {k: s if last.count(s) == 1 else k for k, s in zip(keys, last)}


def label(values: dict[str, Any]) -> str:
    """``{"algorithm.name": "fedavg", "train.lr": 0.1}`` → ``fedavg, lr=0.1`` (the method bare)."""
    names = short_names(list(values))
    parts = [fmt_value(v) if k == "algorithm.name" else f"{names[k]}={fmt_value(v)}" for k, v in values.items()]
    return ", ".join(parts) or "all runs"


def parse_selector(text: str, option: str) -> tuple[str, Any]:
    """``KEY=VALUE`` → (key, YAML value), so ``train.lr=0.1`` matches the float 0.1."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ValueError(f"{option}: expected KEY=VALUE, got {text!r}")
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError:
        value = raw
    return key.strip(), value


def matches(run: Run, key: str, value: Any) -> bool:
    have = run.value(key)
    return have == value or fmt_value(have) == str(value)
