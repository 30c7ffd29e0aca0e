"""Model registry: ``create(name, num_classes, in_channels, input_size, norm)`` → nn.Module.

An entry is a builder with that signature whose ``norm`` default is the model's usual
normalisation; a user's own is ``model.name: package.module:function``. The built-in ones are
registered by dotted path: a model's module defines ``torch.nn.Module`` classes, so importing
it imports torch, which checking a config must not.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from edgempi.registry import MODELS
from edgempi.util.lazy import torch

if TYPE_CHECKING:
    from torch import nn

Builder = Callable[..., "nn.Module"]
NORMS = ("batch", "group", "none")

for _path in ("edgempi.models.lenet:lenet5", "edgempi.models.lenet:lenet5_keras", "edgempi.models.resnet:resnet18",
              "edgempi.models.zoo:fda_cnn", "edgempi.models.zoo:densenet121", "edgempi.models.zoo:mlp",
              "edgempi.spatial.vgg:spatial_vgg"):
    MODELS.add_path(_path.rpartition(":")[2], _path)  # the builder's name is the model's


def names() -> tuple[str, ...]:
    return MODELS.names()


def create(name: str, num_classes: int = 10, in_channels: int = 1, input_size: int = 28,
           norm: str | None = None) -> nn.Module:
    """Build a model; ``norm=None`` takes the model's usual normalisation."""
    builder: Builder = MODELS.get(name)
    options = {} if norm is None else {"norm": norm}
    model = builder(num_classes=num_classes, in_channels=in_channels, input_size=input_size, **options)
    if not isinstance(model, torch.nn.Module):
        raise ValueError(f"model.name: {name!r} returned {type(model).__name__}, not a torch.nn.Module")
    return model


def probe(cfg: Any) -> nn.Module | None:
    """The configured model built on CPU for the input shape the data set declares, for a
    config check before any MPI work; None if it cannot be built here."""
    shape = cfg.data.input_shape()
    try:
        return create(cfg.model.name, in_channels=shape[0], input_size=shape[1], norm=cfg.model.norm)
    except (ValueError, RuntimeError):
        return None


def num_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


__all__ = ["NORMS", "create", "names", "probe", "num_parameters"]
