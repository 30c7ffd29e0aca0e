"""Does ``torch.compile`` make the batched group step faster? One group of LeNet-5 devices'
forward and backward (``edgempi.batched.Stacked.losses``, the loss summed, gradients of the
stacked rows) eager and compiled by inductor (its backward by AOTAutograd), alternating in one
process, with the compiled gradients checked against the eager ones.

    OMP_NUM_THREADS=1 python benchmarks/micro/batched_compiled.py --devices 16 --batch 32
"""
from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from edgempi import batched, models
from edgempi.flat import FlatModel

Losses = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def gradient(losses: Losses, rows: torch.Tensor, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The gradient of the summed losses with respect to the stacked rows: one group step less its optimizer."""
    rows = rows.detach().requires_grad_()
    (grad,) = torch.autograd.grad(losses(rows, images, labels).sum(), rows)
    return grad


def ms_per_device_step(losses: Losses, args: tuple[torch.Tensor, ...], devices: int, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        gradient(losses, *args)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3 / devices


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", type=int, default=16)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3, help="alternations of eager and compiled")
    parser.add_argument("--repeats", type=int, default=20, help="group steps per median")
    args = parser.parse_args()
    torch.manual_seed(0)
    model = models.create("lenet5", in_channels=1, input_size=28)
    stacked = batched.Stacked(model)  # type: ignore[arg-type]
    rows = FlatModel(model).params.repeat(args.devices, 1)
    inputs = (rows, torch.randn(args.devices, args.batch, 1, 28, 28), torch.randint(10, (args.devices, args.batch)))
    start = time.perf_counter()
    compiled = torch.compile(stacked.losses, dynamic=False)
    difference = (gradient(compiled, *inputs) - gradient(stacked.losses, *inputs)).abs().max().item()
    print(f"first compiled step {time.perf_counter() - start:.1f} s; largest gradient difference {difference:.2e}")
    for _ in range(args.rounds):
        eager = ms_per_device_step(stacked.losses, inputs, args.devices, args.repeats)
        fast = ms_per_device_step(compiled, inputs, args.devices, args.repeats)
        print(f"{args.devices} devices, batch {args.batch}: eager {eager:.3f} ms a device-step, "
              f"compiled {fast:.3f} ({fast / eager:.2f} x eager)")


if __name__ == "__main__":
    main()
