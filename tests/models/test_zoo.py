"""The extra models: parameter counts from the papers, forward shapes, norm choices, clear refusals."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from edgempi.models.zoo import NORMS, densenet121, fda_cnn, mlp, norm_layer


def count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def test_fda_cnn_has_the_papers_parameter_count():
    assert count(fda_cnn(10, 1, 28, "none")) == 2_592_202


def test_densenet121_cifar_parameter_count():
    # torchvision's 7,978,856 with a 10-way head (-1,014,750) and a 3x3 stem (-7,680)
    assert count(densenet121(10, 3, 32, "batch")) == 6_956_426


def test_mlp_parameter_count():
    assert count(mlp(10, 1, 28, "none")) == 784 * 200 + 200 + 200 * 200 + 200 + 200 * 10 + 10


@pytest.mark.parametrize("builder, shape", [
    (fda_cnn, (1, 28)), (fda_cnn, (3, 32)), (densenet121, (3, 32)), (densenet121, (1, 28)),
    (mlp, (1, 28)), (mlp, (3, 32)),
])
@pytest.mark.parametrize("norm", NORMS)
def test_forward_gives_logits_per_class(builder, shape, norm):
    channels, size = shape
    model = builder(num_classes=7, in_channels=channels, input_size=size, norm=norm)
    out = model(torch.randn(2, channels, size, size))
    assert out.shape == (2, 7) and torch.isfinite(out).all()
    has_bn = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    has_gn = any(isinstance(m, nn.GroupNorm) for m in model.modules())
    assert (has_bn, has_gn) == (norm == "batch", norm == "group")


@pytest.mark.parametrize("builder", [fda_cnn, densenet121])
def test_too_small_input_is_refused_by_name(builder):
    with pytest.raises(ValueError, match=rf"{builder.__name__}.*input_size >= 8.*got 4"):
        builder(num_classes=10, in_channels=1, input_size=4, norm="none")


@pytest.mark.parametrize("builder", [fda_cnn, densenet121, mlp])
def test_unknown_norm_is_refused(builder):
    with pytest.raises(ValueError, match="model.norm.*'layer'"):
        builder(num_classes=10, in_channels=1, input_size=28, norm="layer")


@pytest.mark.parametrize("channels, groups", [(64, 32), (96, 32), (6, 3), (20, 10), (3, 1), (1, 1)])
def test_group_norm_groups_divide_the_channels(channels, groups):
    layer = norm_layer("group", channels)
    assert isinstance(layer, nn.GroupNorm) and layer.num_groups == groups


def test_norm_layer_kinds():
    assert isinstance(norm_layer("batch", 8), nn.BatchNorm2d)
    assert isinstance(norm_layer("batch", 8, dim=1), nn.BatchNorm1d)
    assert isinstance(norm_layer("none", 8), nn.Identity)
