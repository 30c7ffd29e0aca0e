"""``parallel.batched``: which runs can batch their devices' steps, the one-line refusals of
``on``, and the stacked forward pass against each device's own (the collective comparisons of
whole runs are in tests/mpi/test_batched_runs.py)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from helpers import ROOT, load_script, small_config
from torch import nn

from edgempi import batched, models
from edgempi.config import from_dict
from edgempi.flat import FlatModel
from edgempi.settings import ConfigError

MANY = ["parallel.devices_per_rank=3", "algorithm.name=fedavg", "algorithm.local_steps=2"]


@pytest.mark.parametrize("overrides,why", [
    (["parallel.devices_per_rank=1"], "one device per rank"),
    ([*MANY, "algorithm.name=fedprox"], "fedprox changes each device's gradient"),
    ([*MANY, "algorithm.name=scaffold"], "scaffold changes each device's gradient"),
    ([*MANY, "model.norm=batch"], "running statistics (BatchNorm)"),
    ([*MANY, "model.norm=group"], "GroupNorm layer"),
    ([*MANY, "model.name=fda_cnn"], "Dropout layer"),
    ([*MANY, "model.name=resnet18"], "not a plain stack"),
])
def test_on_is_refused_in_one_line_where_the_loop_must_train(overrides, why):
    with pytest.raises(ConfigError) as err:
        from_dict(small_config(), [*overrides, "parallel.batched=on"])
    assert err.value.key == "parallel.batched" and why in str(err.value) and "\n" not in str(err.value)
    assert from_dict(small_config(), overrides).parallel.batched == "auto"  # auto falls back instead


@pytest.mark.parametrize("value,read", [("on", "on"), ("off", "off"), ("auto", "auto"), ("true", "on")])
def test_yaml_on_and_off_read_as_the_words(value, read):
    assert from_dict(small_config(), [*MANY, f"parallel.batched={value}"]).parallel.batched == read


def test_an_unknown_value_is_refused():
    with pytest.raises(ConfigError, match="parallel.batched: unknown value 'sometimes'"):
        from_dict(small_config(), [*MANY, "parallel.batched=sometimes"])


def odd_convolutions() -> nn.Sequential:
    """Convolutions LeNet-5 does not have: stride, dilation, groups, ``'same'`` padding with an
    odd pixel, no bias, a max-pool with a stride of its own, a ReLU before a Linear."""
    return nn.Sequential(nn.Conv2d(3, 4, 3, stride=2, padding=1, bias=False), nn.ReLU(), nn.MaxPool2d(2, 1),
                         nn.Conv2d(4, 6, (2, 4), dilation=(3, 1), padding="same", groups=2), nn.ReLU(),
                         nn.Conv2d(6, 4, 3, padding="valid"), nn.Flatten(), nn.ReLU(), nn.Linear(4 * 4 * 4, 10))


BUILDERS = {"lenet5_28": lambda: models.create("lenet5", in_channels=1, input_size=28),
            "lenet5_32": lambda: models.create("lenet5", in_channels=3, input_size=32),
            "lenet5_keras": lambda: models.create("lenet5_keras", in_channels=1, input_size=28),  # tanh, average pools
            "mlp": lambda: models.create("mlp", in_channels=1, input_size=12),
            "odd_convolutions": odd_convolutions}
IMAGES = {"lenet5_28": (1, 28), "lenet5_32": (3, 32), "lenet5_keras": (1, 28), "mlp": (1, 12),
          "odd_convolutions": (3, 13)}


@pytest.mark.parametrize("name", BUILDERS)
@pytest.mark.filterwarnings("ignore:Using padding=.same. with even kernel")
def test_the_stacked_forward_is_each_devices_own(name):
    """Logits and each device's loss gradient of the stacked pass equal the model's, device by device."""
    torch.manual_seed(0)
    model = BUILDERS[name]()
    assert batched.model_reason(model) is None
    rows = torch.stack([torch.cat([p.detach().flatten() for p in BUILDERS[name]().parameters()]) for _ in range(4)])
    channels, side = IMAGES[name]
    images, labels = torch.randn(4, 5, channels, side, side), torch.randint(0, 10, (4, 5))
    images[..., :side // 3, :] = 0.5  # a plain background, as most images have: tied maxima to pool
    stacked = batched.Stacked(model)
    leaf = rows.clone().requires_grad_()
    (grads,) = torch.autograd.grad(stacked.losses(leaf, images, labels).sum(), leaf)
    for d in range(4):
        torch.nn.utils.vector_to_parameters(rows[d], model.parameters())
        model.zero_grad()
        logits = model(images[d])
        F.cross_entropy(logits, labels[d]).backward()
        assert torch.allclose(stacked(rows, images)[d], logits, atol=1e-5)
        assert torch.allclose(grads[d], torch.cat([p.grad.flatten() for p in model.parameters()]), atol=1e-6)


def test_models_the_stack_does_not_know_keep_the_loop():
    assert "Dropout" in batched.model_reason(nn.Sequential(nn.Linear(2, 2), nn.Dropout(0.5)))
    assert "frozen" in batched.model_reason(nn.Sequential(nn.Linear(2, 2).requires_grad_(False)))
    assert "circular" in batched.model_reason(nn.Sequential(nn.Conv2d(1, 2, 3, padding_mode="circular")))


@pytest.mark.parametrize("overrides,said", [
    (MANY, "the 3 devices of each rank take their local steps together, as one batched computation"),
    ([*MANY, "model.norm=batch"], "the 3 devices of each rank take their local steps one after another "
                                  "(the model keeps running statistics (BatchNorm) that every step updates)"),
    ([*MANY, "parallel.devices_per_rank=1"], None),
])
def test_the_path_is_said_once(overrides, said, capsys):
    from types import SimpleNamespace

    from edgempi.runner import say_batching

    cfg = from_dict(small_config(), overrides)
    reason = batched.why_not(cfg, models.probe(cfg))
    say_batching(cfg, SimpleNamespace(unbatched_because=reason))
    err = capsys.readouterr().err
    assert err == ("" if said is None else f"edgempi: {said}\n")


def test_the_kernel_floor_times_every_kind_of_layer_the_batched_path_runs():
    """benchmarks/micro/lenet_ceiling.py's floors (torch's kernels alone, laid out as the batched
    path lays them out, and the rest of a step's work) run, and find convolutions, max-pools,
    linear layers, ReLUs, the loss, the optimizer's update and the data in LeNet-5's step."""
    ceiling = load_script(ROOT / "benchmarks" / "micro" / "lenet_ceiling.py")
    parts = ceiling.floors(batch=2, group=3)
    assert set(parts) == {*ceiling.KERNELS, "ReLUs", "loss", "optimizer", "data"}, parts
    assert set(ceiling.KERNELS) == {"convolutions", "max-pools", "linear layers"}
    assert all(ms > 0 for ms in parts.values()), parts


def test_the_compile_benchmark_times_the_gradient_the_loop_computes():
    """benchmarks/micro/batched_compiled.py times (and checks the compiled step against) the
    gradient of a group's stacked rows: device by device, the loop's gradient of its own loss."""
    bench = load_script(ROOT / "benchmarks" / "micro" / "batched_compiled.py")
    torch.manual_seed(0)
    model = models.create("lenet5", in_channels=1, input_size=28)
    flat = FlatModel(model)
    images, labels = torch.randn(3, 2, 1, 28, 28), torch.randint(10, (3, 2))
    grads = bench.gradient(batched.Stacked(model).losses, flat.params.repeat(3, 1), images, labels)
    for device in range(3):
        flat.zero_grad()
        F.cross_entropy(model(images[device]), labels[device]).backward()
        torch.testing.assert_close(grads[device], flat.grads, rtol=1e-4, atol=1e-6)
