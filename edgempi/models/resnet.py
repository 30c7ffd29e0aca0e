"""ResNet-18 with the CIFAR stem (3×3 conv, stride 1, no max-pool), from torchvision's blocks."""
from __future__ import annotations

from functools import partial

from torch import nn
from torchvision.models.resnet import BasicBlock, ResNet

from edgempi.models.zoo import norm_layer


def resnet18(num_classes: int = 10, in_channels: int = 3, input_size: int = 32, norm: str = "batch") -> nn.Module:
    model = ResNet(BasicBlock, [2, 2, 2, 2], num_classes=num_classes, norm_layer=partial(norm_layer, norm))
    model.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
    model.maxpool = nn.Identity()
    return model
