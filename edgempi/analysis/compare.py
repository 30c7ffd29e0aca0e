"""What tells runs apart: the config keys that differ, groups of runs, and labels from both.

Plots and tables name a run by what is special about it among the runs shown, not by its
whole config, so a sweep over ``train.lr`` reads as ``lr = 0.1`` and ``lr = 0.01``; a method by
its display name with the settings that define it: ``Large Batch``, ``FedAvg``,
``FDA (linear, Θ = 1)``, ``Dynamic averaging (Δ = 2)``. A stored config holds every key of its
method and compressor, so a key that only some runs have is a difference only where one of
them sets it away from its default: next to Large Batch, FedAvg's ``server_momentum = 0.9``
(unused without a server optimizer) says nothing, its ``local_steps = 10`` does.
"""
from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import yaml

from edgempi.analysis.runs import Run, flatten
from edgempi.data.names import title
from edgempi.data.partition import PARAMETERS
from edgempi.settings import printable

# Keys that differ between runs without changing what was measured.
IGNORED = ("output.dir", "output.name")
# Keyed by a run's algorithm.name, which a file may lack (None).
METHODS: dict[str | None, str] = {
    "centralized": "Centralized", "large_batch": "Large Batch", "fedavg": "FedAvg", "fedprox": "FedProx",
    "scaffold": "SCAFFOLD", "dynamic": "Dynamic averaging", "fda": "FDA"}
# Settings that belong in a method's display name: (key, how it is written), for that method only.
METHOD_KEYS: dict[str | None, tuple[tuple[str, str], ...]] = {
    "fedprox": (("algorithm.mu", "μ = {}"),), "dynamic": (("algorithm.delta", "Δ = {}"),),
    "fda": (("algorithm.variant", "{}"), ("algorithm.theta", "Θ = {}"))}
ALL_METHOD_KEYS = {"algorithm.name", *(k for keys in METHOD_KEYS.values() for k, _ in keys)}


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


def differing_keys(runs: Sequence[Run], exclude: Iterable[str] = (), all_settings: bool = False) -> list[str]:
    """Config keys that tell the runs apart, in the configs' order: a key all runs have whose
    value is not the same in each, or a key only some runs have (another method's, another
    compressor's) that they disagree on or one of them sets away from its default.
    ``all_settings``: every key whose stored value (or absence) is not the same in every run."""
    skip = set(IGNORED) | set(exclude)
    keys = [k for k in dict.fromkeys(k for r in runs for k in r.config) if k not in skip]
    return [k for k in keys if _differs(runs, k, all_settings)]


def _differs(runs: Sequence[Run], key: str, all_settings: bool) -> bool:
    if len({_hashable(r.config.get(key)) for r in runs}) < 2:
        return False
    holders = [r for r in runs if key in r.config]
    if all_settings or len(holders) == len(runs) or len({_hashable(r.config[key]) for r in holders}) > 1:
        return True
    return any(not _at_default(r, key) for r in holders)


def _at_default(run: Run, key: str) -> bool:
    """Is the run's value of ``key`` its method's (compressor's, section's) default? A key of
    a method or compressor given by a ``package.module:attr`` path counts as at its default:
    a reader never imports code a file names."""
    defaults = _defaults(str(run.config.get("algorithm.name")), str(run.config.get("compression.name")))
    if key not in defaults:
        return True
    value, default = run.config[key], defaults[key]
    return value == default or fmt_value(value) == fmt_value(default)


@functools.cache
def _defaults(method: str, compressor: str) -> dict[str, Any]:
    """The flattened default config of a run of this built-in method and compressor (the
    sections of one given by a dotted path left out)."""
    from edgempi.config import RunConfig, read_section
    from edgempi.registry import COMPRESSORS, METHODS

    cfg = RunConfig()
    unknown = []
    for section, registry, name in (("algorithm", METHODS, method), ("compression", COMPRESSORS, compressor)):
        if name in registry.names():
            setattr(cfg, section, read_section(registry, {"name": name}, f"{section}."))
        else:
            unknown.append(f"{section}.")
    return {k: v for k, v in flatten(dataclasses.asdict(cfg)).items() if not k.startswith(tuple(unknown))}


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


def data_title(runs: Sequence[Run]) -> str:
    """``Fashion-MNIST, IID``: the data set and the split the runs share (either alone if they
    share only one; empty if neither)."""
    def shared(keys: Sequence[str]) -> tuple | None:
        values = {tuple(_hashable(r.config.get(k)) for k in keys) for r in runs}
        return values.pop() if len(values) == 1 else None

    name = shared(["data.name"])
    split = shared(["data.partition", *(f"data.{p}" for p in PARAMETERS)])
    args = {p: v for p, v in zip(PARAMETERS, split[1:]) if v is not None} if split else {}
    return title(name[0] if name else None, split[0] if split else None, args)


def fmt_value(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, tuple):
        return "[" + ",".join(fmt_value(v) for v in value) + "]"
    return printable(str(value))


def short_names(keys: Sequence[str]) -> dict[str, str]:
    """The last part of each dotted key, or the whole key where the last parts collide."""
    last = [k.rsplit(".", 1)[-1] for k in keys]
    return {k: s if last.count(s) == 1 else k for k, s in zip(keys, last)}


def method_name(values: Mapping[str, Any]) -> str:
    """``{"algorithm.name": "fda", "algorithm.variant": "linear", "algorithm.theta": 1.0}`` →
    ``FDA (linear, Θ = 1)``: the display name with the method's own settings among ``values``."""
    name = values.get("algorithm.name")
    settings = [form.format(fmt_value(values[k])) for k, form in METHOD_KEYS.get(name, ())
                if values.get(k) is not None]
    shown = METHODS.get(name, fmt_value(name))
    return f"{shown} ({', '.join(settings)})" if settings else shown


def label(values: dict[str, Any]) -> str:
    """``{"algorithm.name": "fedavg", "train.lr": 0.1}`` → ``FedAvg, lr = 0.1``.

    The method goes first by its display name; keys without a value (None: not used by this
    run's method) are left out, and a method's own settings only appear in its name.
    """
    names = short_names(list(values))
    head = [method_name(values)] if "algorithm.name" in values else []
    rest = [f"{names[k]} = {fmt_value(v)}" for k, v in values.items() if k not in ALL_METHOD_KEYS and v is not None]
    return ", ".join(head + rest) or "all runs"


def run_label(run: Run, shown: Sequence[str]) -> str:
    """A run's legend entry among runs that differ in ``shown``: the method (with its own
    settings) whenever the method or one of them differs, then the other differing keys."""
    keys = list(shown)
    if not keys or ALL_METHOD_KEYS & set(keys):
        keys = ["algorithm.name", *(k for k, _ in METHOD_KEYS.get(run.config.get("algorithm.name"), ())), *keys]
    return label({k: run.value(k) for k in dict.fromkeys(keys)})


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
