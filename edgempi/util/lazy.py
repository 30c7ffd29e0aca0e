"""Torch imported on first use, so that reading and checking a config costs no torch import.

``edgempi validate`` and every config error of ``edgempi run`` import the settings of every
method and compressor (they live in the method's module, beside its policy), but train nothing;
importing torch and torchvision takes seconds. A module whose torch use is all inside functions
(and in annotations) imports ``torch`` from here; the first attribute it reads (``torch.zeros``)
loads the real module in place, after which it is the ordinary module object, as fast as a plain
import. A type checker sees the plain import, so ``torch.Tensor`` in an annotation is the class.
A module that needs torch while it is imported (a ``torch.nn.Module`` subclass, a module-level
tensor) imports it plainly and must stay off that path: models are registered by dotted path.
"""
from __future__ import annotations

import importlib.util
import sys
import types
from typing import TYPE_CHECKING


def lazy_import(name: str) -> types.ModuleType:
    """The top-level module ``name``, to be executed when one of its attributes is first read
    (the standard library's :class:`importlib.util.LazyLoader` recipe). Raises ImportError
    now, not later, if it is not installed."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.find_spec(name)
    if spec is None or spec.loader is None:
        raise ModuleNotFoundError(f"No module named {name!r}", name=name)
    spec.loader = importlib.util.LazyLoader(spec.loader)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


if TYPE_CHECKING:
    import torch
else:
    torch = lazy_import("torch")
