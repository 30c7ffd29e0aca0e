"""Models beyond LeNet-5 and ResNet-18: the FDA paper's VGG16*, DenseNet-121 for 32×32, an MLP.

Each builder has the registry's signature ``(num_classes, in_channels, input_size, norm)`` and
refuses, with a one-line ValueError, inputs it cannot take.
"""
from __future__ import annotations

from collections.abc import Callable

from torch import nn

from edgempi.models import NORMS


def wu_he_groups(channels: int) -> int:
    """32 groups as in Wu & He (2018), fewer when the channels do not divide evenly, at least
    two channels per group."""
    return max((g for g in range(1, 33) if channels % g == 0 and channels // g >= 2), default=1)


def norm_layer(norm: str, channels: int, dim: int = 2, groups: Callable[[int], int] = wu_he_groups) -> nn.Module:
    """A normalisation layer by name, so every model can swap BatchNorm for GroupNorm or nothing.

    GroupNorm is the usual choice when BatchNorm statistics are unsafe to keep local (non-IID
    devices, FedAvg); ``groups`` gives its number of groups for a number of channels (a model
    may keep a rule of its own). ``dim`` is 1 for [N, C] features, 2 for feature maps.
    """
    if norm == "batch":
        return nn.BatchNorm1d(channels) if dim == 1 else nn.BatchNorm2d(channels)
    if norm == "group":
        return nn.GroupNorm(groups(channels), channels)
    if norm == "none":
        return nn.Identity()
    raise ValueError(f"model.norm: unknown norm {norm!r} (choose from {', '.join(NORMS)})")


def _require(model: str, input_size: int, smallest: int, why: str) -> None:
    if input_size < smallest:
        raise ValueError(f"model {model!r} needs input_size >= {smallest} ({why}); got {input_size}")


def fda_cnn(num_classes: int = 10, in_channels: int = 1, input_size: int = 28, norm: str = "none") -> nn.Module:
    """The FDA paper's "VGG16*" (AdvancedCNN in Theologitis et al.'s code): three VGG blocks of two
    3×3 convs (64, 128, 256) with 2×2 max-pools, then 512-512 dense layers with dropout 0.5.

    2,592,202 parameters on 28×28×1 with 10 classes and no norm. The paper's softmax is left to
    the loss: the model returns logits.
    """
    _require("fda_cnn", input_size, 8, "three 2x2 max-pools")
    layers: list[nn.Module] = []
    channels = in_channels
    for width in (64, 128, 256):
        for _ in range(2):
            layers += [nn.Conv2d(channels, width, 3, padding=1), norm_layer(norm, width), nn.ReLU(inplace=True)]
            channels = width
        layers.append(nn.MaxPool2d(2))
    side = input_size // 8
    return nn.Sequential(
        *layers, nn.Flatten(),
        nn.Linear(256 * side * side, 512), nn.ReLU(inplace=True), nn.Dropout(0.5),
        nn.Linear(512, 512), nn.ReLU(inplace=True), nn.Dropout(0.5),
        nn.Linear(512, num_classes),
    )


def densenet121(num_classes: int = 10, in_channels: int = 3, input_size: int = 32,
                norm: str = "batch") -> nn.Module:
    """torchvision's DenseNet-121 with the usual CIFAR stem: a 3×3 stride-1 conv and no max-pool,
    so 32×32 input keeps 4×4 maps before the last block instead of vanishing.

    ``norm`` replaces every BatchNorm (all DenseNet norms sit on 2-D feature maps).
    """
    _require("densenet121", input_size, 8, "three 2x2 transition pools")
    # Here, not at the top: importing torchvision costs a LeNet-5 or MLP run ~1–2 s of start-up
    # (its ops pull in torch._dynamo), and norm_layer, which every model uses, lives in this module.
    from torchvision.models import densenet121 as tv_densenet121

    model = tv_densenet121(weights=None, num_classes=num_classes)
    model.features.conv0 = nn.Conv2d(in_channels, 64, 3, padding=1, bias=False)
    model.features.pool0 = nn.Identity()
    if norm != "batch":
        for parent in list(model.modules()):
            for name, child in parent.named_children():
                if isinstance(child, nn.BatchNorm2d):
                    setattr(parent, name, norm_layer(norm, child.num_features))
    return model


def mlp(num_classes: int = 10, in_channels: int = 1, input_size: int = 28, norm: str = "none",
        hidden: int = 200) -> nn.Module:
    """Flatten + two hidden ReLU layers (McMahan et al.'s "2NN" at 200 units): for synthetic data,
    where neighbouring inputs have no structure for a convolution to exploit."""
    _require("mlp", input_size, 1, "a non-empty image")
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(in_channels * input_size * input_size, hidden), norm_layer(norm, hidden, dim=1),
        nn.ReLU(inplace=True),
        nn.Linear(hidden, hidden), norm_layer(norm, hidden, dim=1), nn.ReLU(inplace=True),
        nn.Linear(hidden, num_classes),
    )
