"""Is drawing a batch cheap next to the step it feeds?

Times, in one process and interleaved so machine noise hits both alike, (a) drawing a batch of
32 from in-memory uint8 tensors — index-gather, augmentation where the data set uses it, and
normalisation — and (b) the model step it feeds: forward, backward and an SGD step. Prints
medians over repeats and their ratio; the target is under 5 %.

    OMP_NUM_THREADS=1 PYTHONPATH=$PWD python benchmarks/micro/loader.py [--repeats 15]
"""
from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from torch import nn
from torchvision.models import resnet18

from edgempi.data.augment import crop_flip
from edgempi.data.sources import CIFAR10_MEAN, CIFAR10_STD
from edgempi.registry import DATASETS


def lenet5() -> nn.Module:
    """LeNet-5 with the first 5×5 conv padded by 2: 61,706 parameters on 28×28, as in the FDA paper."""
    return nn.Sequential(
        nn.Conv2d(1, 6, 5, padding=2), nn.Tanh(), nn.AvgPool2d(2),
        nn.Conv2d(6, 16, 5), nn.Tanh(), nn.AvgPool2d(2), nn.Flatten(),
        nn.Linear(400, 120), nn.Tanh(), nn.Linear(120, 84), nn.Tanh(), nn.Linear(84, 10),
    )


def cifar_resnet18() -> nn.Module:
    """torchvision's ResNet-18 with the usual CIFAR stem (3×3 stride-1 conv, no max-pool)."""
    model = resnet18(num_classes=10)
    model.conv1 = nn.Conv2d(3, 64, 3, padding=1, bias=False)
    model.maxpool = nn.Identity()
    return model


def drawer(x: torch.Tensor, dataset: str, batch: int, augment: bool) -> Callable[[], torch.Tensor]:
    """One batch as the loader makes it: gather random rows, augment, scale to normalised floats."""
    gen = torch.Generator().manual_seed(0)
    stats = (CIFAR10_MEAN, CIFAR10_STD) if dataset == "cifar10" else \
        (DATASETS.get(dataset).mean, DATASETS.get(dataset).std)
    mean, std = (torch.tensor(v).view(1, -1, 1, 1) for v in stats)
    scale, shift = (1 / 255) / std, -mean / std

    def draw() -> torch.Tensor:
        xb = x[torch.randint(0, len(x), (batch,), generator=gen)]
        if augment:
            xb = crop_flip(xb, gen)
        return torch.addcmul(shift, xb.float(), scale)

    return draw


def stepper(model: nn.Module, xb: torch.Tensor) -> Callable[[], None]:
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    yb = torch.randint(0, 10, (len(xb),))
    loss_fn = nn.CrossEntropyLoss()

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        loss_fn(model(xb), yb).backward()
        opt.step()

    return step


def seconds(fn: Callable[[], object], inner: int) -> float:
    start = time.perf_counter()
    for _ in range(inner):
        fn()
    return (time.perf_counter() - start) / inner


def compare(name: str, draw: Callable[[], torch.Tensor], step: Callable[[], None], repeats: int,
            draw_inner: int, step_inner: int) -> None:
    draw(), step()  # warm-up: allocator, kernels
    draws, steps = [], []
    for _ in range(repeats):
        draws.append(seconds(draw, draw_inner))
        steps.append(seconds(step, step_inner))
    d, s = statistics.median(draws), statistics.median(steps)
    print(f"{name:<34} draw {d * 1e3:8.3f} ms   step {s * 1e3:9.2f} ms   draw/step {100 * d / s:6.2f} %")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--batch", type=int, default=32)
    args = parser.parse_args()
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), batch {args.batch}, "
          f"medians of {args.repeats} repeats")
    mnist = torch.randint(0, 256, (60_000, 1, 28, 28), dtype=torch.uint8)
    cifar = torch.randint(0, 256, (50_000, 3, 32, 32), dtype=torch.uint8)
    b = args.batch
    draw = drawer(mnist, "fashion-mnist", b, augment=False)
    compare("LeNet-5 28x28 (gather+norm)", draw, stepper(lenet5(), draw()), args.repeats, 50, 20)
    draw = drawer(mnist, "fashion-mnist", b, augment=True)
    compare("LeNet-5 28x28 (gather+aug+norm)", draw, stepper(lenet5(), draw()), args.repeats, 50, 20)
    draw = drawer(cifar, "cifar10", b, augment=True)
    compare("ResNet-18 32x32 (gather+aug+norm)", draw, stepper(cifar_resnet18(), draw()), args.repeats, 20, 1)


if __name__ == "__main__":
    main()
