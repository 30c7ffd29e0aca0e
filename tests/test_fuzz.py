"""Fuzzing the config surface: random keys, values and types through what ``edgempi validate`` and
``--set`` call (tests/analysis/test_fuzz_readers.py sends the same values through the readers).
Bad input may only ever be a one-line ConfigError: never another exception, never a hang."""
from __future__ import annotations

import dataclasses
import typing
from datetime import timedelta

import yaml
from helpers import small_config
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgempi.config import RunConfig, from_dict
from edgempi.util import yamltext

FAST = settings(max_examples=200, deadline=timedelta(seconds=10), suppress_health_check=[HealthCheck.too_slow])


def known_keys() -> list[str]:
    """Every dotted key of the config's sections, and the names of a few plug-in keys."""
    keys = ["seed", "algorithm.name", "algorithm.local_steps", "algorithm.theta", "algorithm.variant",
            "algorithm.delta", "algorithm.participation", "compression.name", "compression.ratio", "compression.rank"]
    for f in dataclasses.fields(RunConfig):
        hint = typing.get_type_hints(RunConfig)[f.name]
        if dataclasses.is_dataclass(hint):
            keys += [f"{f.name}.{g.name}" for g in dataclasses.fields(hint)]
    return keys


KEYS = known_keys()
SCALARS = (st.none() | st.booleans() | st.integers() | st.integers(-3, 100) | st.floats(allow_nan=True)
           | st.text(max_size=12) | st.sampled_from(["auto", "on", "sgd", "adam", "spatial", "fedavg", "fda", "topk",
                                                     "lenet5", "synthetic", "dirichlet", "a..b:c", ".x:y", "os:getcwd",
                                                     "3e-5", "inf", "nan", "~", "[1, 2]"]))
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4)
                      | st.dictionaries(st.text(max_size=6) | st.sampled_from(KEYS), inner, max_size=4), max_leaves=12)
KEY = st.sampled_from(KEYS) | st.text(max_size=15)


def one_line_value_error(call: typing.Callable[[], object]) -> None:
    """``call()`` succeeds, or raises a ValueError whose message is one line."""
    try:
        call()
    except ValueError as exc:
        assert "\n" not in str(exc).strip(), str(exc)


def nested(pairs: dict[str, object]) -> dict:
    """``{"train.lr": 1}`` → ``{"train": {"lr": 1}}`` (a key that is also a section stays flat)."""
    out: dict = {}
    for key, value in pairs.items():
        *sections, last = key.split(".")
        node = out
        for part in sections:
            child = node.setdefault(part, {})
            node = child if isinstance(child, dict) else node
        node[last] = value
    return out


@FAST
@given(st.dictionaries(KEY, VALUES, max_size=6))
def test_validate_never_fails_but_in_one_line(pairs: dict[str, object]) -> None:
    raw = nested(pairs)
    one_line_value_error(lambda: from_dict({**small_config(), **raw}))
    one_line_value_error(lambda: from_dict(raw))


@FAST
@given(st.lists(st.tuples(KEY, VALUES), max_size=4))
def test_set_overrides_never_fail_but_in_one_line(overrides: list[tuple[str, object]]) -> None:
    texts = [f"{k}={yaml.safe_dump(v, default_flow_style=True, width=10**6).strip().removesuffix('...').strip()}"
             for k, v in overrides]
    one_line_value_error(lambda: from_dict(small_config(), texts))


@FAST
@given(st.lists(st.text(max_size=40), max_size=3))
def test_raw_set_text_never_fails_but_in_one_line(texts: list[str]) -> None:
    one_line_value_error(lambda: from_dict(small_config(), texts))


@FAST
@given(st.text(max_size=200))
def test_yaml_text_never_fails_but_in_one_line(text: str) -> None:
    one_line_value_error(lambda: yamltext.parse(text, "config"))
