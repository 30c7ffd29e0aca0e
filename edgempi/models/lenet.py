"""LeNet-5 with 5×5 convs, the first padded by 2 on 28×28 input: 61,706 parameters on 28×28×1.

``lenet5`` is the modern variant (ReLU, max pooling, torch's default init); ``lenet5_keras`` is
the classic one as Keras builds it, which the FDA paper's code trains (tanh, average pooling,
Glorot-uniform weights, zero biases).
"""
from __future__ import annotations

from torch import nn

from edgempi.models.zoo import norm_layer


def _lenet5(num_classes: int, in_channels: int, input_size: int, norm: str,
            act: type[nn.Module], pool: type[nn.Module]) -> nn.Sequential:
    # On 32×32 input (CIFAR) the classic unpadded first conv keeps the 5×5×16 feature map.
    pad = 2 if input_size == 28 else 0
    side = ((input_size + 2 * pad - 4) // 2 - 4) // 2
    if side < 1:
        raise ValueError(f"lenet5 needs inputs of at least 28×28, got {input_size}×{input_size}")
    return nn.Sequential(
        nn.Conv2d(in_channels, 6, 5, padding=pad), norm_layer(norm, 6), act(), pool(2),
        nn.Conv2d(6, 16, 5), norm_layer(norm, 16), act(), pool(2),
        nn.Flatten(),
        nn.Linear(16 * side * side, 120), act(),
        nn.Linear(120, 84), act(),
        nn.Linear(84, num_classes),
    )


def lenet5(num_classes: int = 10, in_channels: int = 1, input_size: int = 28, norm: str = "none") -> nn.Module:
    """LeNet-5 as modern code writes it (ReLU, max pooling, torch's default init): 61,706 parameters on MNIST."""
    return _lenet5(num_classes, in_channels, input_size, norm, nn.ReLU, nn.MaxPool2d)


def lenet5_keras(num_classes: int = 10, in_channels: int = 1, input_size: int = 28, norm: str = "none") -> nn.Module:
    """Theologitis et al.'s LeNet-5 (FedL-Sync-FDA, ``fdavg/models/lenet5.py``), so their MNIST
    runs can be repeated as run: Keras' defaults are Glorot-uniform kernels and zero biases,
    where torch's would draw both from U(±1/√fan_in). The softmax is left to the loss: logits out.
    """
    model = _lenet5(num_classes, in_channels, input_size, norm, nn.Tanh, nn.AvgPool2d)
    for layer in model:
        if isinstance(layer, (nn.Conv2d, nn.Linear)):
            nn.init.xavier_uniform_(layer.weight)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)
    return model
