"""Compressors by name, as ``compression.name`` spells them (each registers itself with
``@COMPRESSORS.register``; a user's own is ``package.module:Class``)."""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any, cast

from edgempi.config import read_section
from edgempi.registry import COMPRESSORS
from edgempi.settings import ConfigError

from .base import CompressionSettings, Compressor

#: what the run, not the ``compression`` section, hands a compressor.
GIVEN = {"shapes": None, "seed": 0, "unbiased": True}


def settings_of(section: Mapping[str, Any] | CompressionSettings) -> CompressionSettings:
    """The checked settings of a ``compression`` section given as a mapping (or already read).
    Keys of other compressors are left out; keys no compressor takes are an error."""
    settings = cast(CompressionSettings, read_section(COMPRESSORS, dict(section), "compression.")) \
        if isinstance(section, Mapping) else section
    settings.check()
    return settings


def build(section: Mapping[str, Any] | CompressionSettings, shapes: Sequence[Sequence[int]], seed: int) -> Compressor:
    """The compressor a ``compression`` section names, for a model of layout ``shapes``."""
    settings = settings_of(section)
    cls: type[Compressor] = COMPRESSORS.get(settings.name)
    return cls.from_settings(settings, [tuple(s) for s in shapes], seed, unbiased=not settings.error_feedback)


def create(name: str, **kw: Any) -> Compressor:
    """The compressor ``name`` with options ``kw``: its settings (ratio, levels, rank ...) and
    what a run gives it (shapes, seed, unbiased); no MPI involved. Raises ValueError naming
    the config key of a bad option."""
    cls: type[Compressor] = COMPRESSORS.get(name)
    own = {f.name for f in dataclasses.fields(cls.Settings)} - {"name"}
    for key in kw:
        if key not in own and key not in GIVEN:
            raise ConfigError(f"compression.{key}", f"not an option of compressor {name!r}")
    settings = cls.Settings(name=name, **{k: v for k, v in kw.items() if k in own})
    settings.check()
    given = {**GIVEN, **{k: v for k, v in kw.items() if k in GIVEN}}
    return cls.from_settings(settings, given["shapes"], given["seed"], given["unbiased"])
