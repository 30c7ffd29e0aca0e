"""Model registry: ``create(name, num_classes, in_channels, input_size, norm)`` → nn.Module."""
from __future__ import annotations

from typing import Callable

from torch import nn

from edgempi.models.lenet import lenet5
from edgempi.models.resnet import resnet18
from edgempi.models.zoo import NORMS, densenet121, fda_cnn, mlp
from edgempi.spatial.vgg import spatial_vgg

# name → (builder, default norm)
_REGISTRY: dict[str, tuple[Callable[..., nn.Module], str]] = {
    "lenet5": (lenet5, "none"),
    "resnet18": (resnet18, "batch"),
    "fda_cnn": (fda_cnn, "none"),
    "densenet121": (densenet121, "batch"),
    "mlp": (mlp, "none"),
    "spatial_vgg": (spatial_vgg, "batch"),
}


def names() -> tuple[str, ...]:
    return tuple(_REGISTRY)


def create(name: str, num_classes: int = 10, in_channels: int = 1, input_size: int = 28,
           norm: str | None = None) -> nn.Module:
    """Build a model; ``norm=None`` takes the model's usual normalisation."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r} (choose from {', '.join(_REGISTRY)})")
    builder, default_norm = _REGISTRY[name]
    return builder(num_classes=num_classes, in_channels=in_channels, input_size=input_size,
                   norm=default_norm if norm is None else norm)


def num_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


__all__ = ["NORMS", "create", "names", "num_parameters"]
