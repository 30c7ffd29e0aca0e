"""LeNet-5 as in the FDA paper: 5×5 convs, the first padded by 2; 61,706 parameters on 28×28×1."""
from __future__ import annotations

from torch import nn

from edgempi.models.zoo import norm_layer


def lenet5(num_classes: int = 10, in_channels: int = 1, input_size: int = 28, norm: str = "none") -> nn.Module:
    # On 32×32 input (CIFAR) the classic unpadded first conv keeps the 5×5×16 feature map.
    pad = 2 if input_size == 28 else 0
    side = ((input_size + 2 * pad - 4) // 2 - 4) // 2
    if side < 1:
        raise ValueError(f"lenet5 needs inputs of at least 28×28, got {input_size}×{input_size}")
    return nn.Sequential(
        nn.Conv2d(in_channels, 6, 5, padding=pad), norm_layer(norm, 6), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5), norm_layer(norm, 16), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(16 * side * side, 120), nn.ReLU(),
        nn.Linear(120, 84), nn.ReLU(),
        nn.Linear(84, num_classes),
    )
