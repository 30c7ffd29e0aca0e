"""Names of the compressors, as ``compression.name`` spells them."""
from __future__ import annotations

import inspect
from typing import Any

from .base import Compressor
from .compressors import FP16, QSGD, NoCompression, RandomK, SignSGD, TopK, _require
from .powersgd import PowerSGD

COMPRESSORS: dict[str, type[Compressor]] = {
    "none": NoCompression,
    "fp16": FP16,
    "topk": TopK,
    "randomk": RandomK,
    "qsgd": QSGD,
    "signsgd": SignSGD,
    "powersgd": PowerSGD,
}


def options(name: str) -> set[str]:
    """The keyword options compressor ``name`` takes."""
    cls = COMPRESSORS.get(name)
    _require(cls is not None, "name", f"unknown compressor {name!r}; choose one of {', '.join(COMPRESSORS)}")
    return set(inspect.signature(cls).parameters)


def create(name: str, **kw: Any) -> Compressor:
    """The compressor ``name`` with options ``kw`` (ratio, warmup_epochs, sample_ratio, levels,
    bucket_size, rank, shapes, unbiased, seed — those it takes); no MPI involved.
    Raises ValueError naming the config key of a bad option."""
    takes = options(name)
    for key in kw:
        _require(key in takes, key, f"not an option of compressor {name!r}")
    return COMPRESSORS[name](**kw)
