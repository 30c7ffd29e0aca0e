"""A VGG-like CNN whose front is feature-map heavy, the case spatial partitioning is for.

The network is one flat ``nn.Sequential`` (conv, norm, ReLU and pooling as separate entries),
so ``parallel.layers: N`` cuts it into the partitioned front ``model[:N]`` and the tail.
"""
from __future__ import annotations

from torch import nn


def _eight_groups(channels: int) -> int:
    """spatial_vgg's GroupNorm: at most 8 groups (its models have always been built so)."""
    return min(8, channels)


def spatial_vgg(num_classes: int = 10, in_channels: int = 3, input_size: int = 128,
                norm: str = "batch", width: int = 16) -> nn.Sequential:
    """Four stages (2, 2, 2, 1 convs of 3×3, each followed by 2×2 max-pooling) then a small head.

    At 128 px and width 16 the first stage alone holds over half of the activations, while
    the head is a global average pool and one linear layer. ``input_size`` only has to survive
    four halvings.
    """
    from edgempi.models.zoo import norm_layer  # imported here: the model registry imports this module

    if input_size < 16:
        raise ValueError(f"data.input_size: spatial_vgg needs at least 16 px, got {input_size}")
    layers: list[nn.Module] = []
    channels = in_channels
    for stage, convs in enumerate((2, 2, 2, 1)):
        out = width * 2 ** stage
        for _ in range(convs):
            layers += [nn.Conv2d(channels, out, 3, padding=1, bias=norm == "none"),
                       norm_layer(norm, out, groups=_eight_groups), nn.ReLU(inplace=False)]
            channels = out
        layers.append(nn.MaxPool2d(2))
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, num_classes)]
    return nn.Sequential(*layers)


def split_front(model: nn.Sequential, layers: int) -> tuple[nn.Sequential, nn.Sequential]:
    """The first ``layers`` entries (partitioned) and the rest (the tail); modules are shared."""
    if not 1 <= layers < len(model):
        raise ValueError(f"parallel.layers: {layers} must be between 1 and {len(model) - 1}")
    return model[:layers], model[layers:]
