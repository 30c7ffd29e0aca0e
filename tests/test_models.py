"""Model registry: parameter counts of the reference experiments and input shapes."""
from __future__ import annotations

import pytest
import torch

from edgempi import models
from edgempi.flat import FlatModel


def test_lenet5_has_the_fda_papers_parameter_count():
    model = models.create("lenet5", num_classes=10, in_channels=1, input_size=28)
    assert models.num_parameters(model) == 61_706
    assert model(torch.randn(3, 1, 28, 28)).shape == (3, 10)


def test_resnet18_cifar_stem():
    model = models.create("resnet18", num_classes=10, in_channels=3, input_size=32)
    assert models.num_parameters(model) == 11_173_962
    assert isinstance(model.maxpool, torch.nn.Identity) and model.conv1.kernel_size == (3, 3)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


@pytest.mark.parametrize("norm", ["batch", "group", "none"])
def test_norms(norm):
    model = models.create("lenet5", norm=norm)
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)


def test_unknown_model_and_too_small_input():
    with pytest.raises(ValueError, match="model.name: unknown value"):
        models.create("vgg99")
    with pytest.raises(ValueError, match="at least 28"):
        models.create("lenet5", input_size=12)


def test_flat_model_keeps_parameters_and_gradients_as_views():
    model = models.create("resnet18", in_channels=3, input_size=32)
    flat = FlatModel(model)
    model(torch.randn(2, 3, 32, 32)).sum().backward()
    start, end = flat.grads.data_ptr(), flat.grads.data_ptr() + 4 * flat.numel
    assert all(start <= p.grad.data_ptr() < end for p in model.parameters())
    assert flat.grads.abs().sum() > 0
    flat.params.sub_(1.0)  # one write to the buffer moves every parameter
    assert torch.equal(model.fc.bias.detach(), flat.params[-10:])
    assert model.bn1.running_mean.data_ptr() == flat.buffers.data_ptr()


def test_lenet5_keras_is_the_fda_papers_network():
    """tanh and average pooling, logits out, and the same 61,706 parameters as ``lenet5``."""
    model = models.create("lenet5_keras")
    assert models.num_parameters(model) == 61_706
    kinds = [type(m) for m in model]
    assert kinds.count(torch.nn.Tanh) == 4 and kinds.count(torch.nn.AvgPool2d) == 2
    assert not {torch.nn.ReLU, torch.nn.MaxPool2d} & set(kinds)
    assert model[0].padding == (2, 2) and isinstance(model[-1], torch.nn.Linear)
    assert model(torch.randn(3, 1, 28, 28)).shape == (3, 10)


def test_lenet5_keras_has_kerass_default_init():
    """Glorot-uniform weights, U(±√(6/(fan_in + fan_out))), of variance 2/(fan_in + fan_out),
    and zero biases. Tolerance: 5 standard errors of a sample variance of n uniform draws
    (relative √(0.8/n)); torch's own init (U(±1/√fan_in)) exceeds the bound of the first conv
    and is 4.6× too narrow in the first dense layer."""
    torch.manual_seed(0)
    layers = [m for m in models.create("lenet5_keras") if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    assert len(layers) == 5
    for layer in layers:
        w = layer.weight.detach().double()
        receptive = w[0, 0].numel()
        fan_in, fan_out = w.shape[1] * receptive, w.shape[0] * receptive
        expected = 2 / (fan_in + fan_out)
        assert w.abs().max() <= (3 * expected) ** 0.5
        assert abs(w.pow(2).mean().item() / expected - 1) < 5 * (0.8 / w.numel()) ** 0.5, layer
        assert torch.count_nonzero(layer.bias) == 0
