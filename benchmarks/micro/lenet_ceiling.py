"""How fast could a LeNet-5 device-step be on one core? Two floors:

- the arithmetic of one local step (forward, backward, as counted by ``torch.utils.flop_counter``)
  over this core's best single-precision rate (a large matrix product, one thread): the time no
  batching of devices can beat, whatever its kernels;
- torch's own kernels, as the batched path (``edgempi/batched.py``) calls them for a group of
  devices: each convolution, max-pool and linear layer forward and backward on its own, warm,
  with nothing else running (no ReLU, loss, optimizer or data): the time no rearrangement of
  torch calls can beat, short of kernels of its own.

Each floor, set beside the loop's time per device-step (``--loop-ms``, from
``benchmarks/micro/devices.py``), bounds what batching can gain over the loop.

    OMP_NUM_THREADS=1 python benchmarks/micro/lenet_ceiling.py --batch 16 --loop-ms 3.1
"""
from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from edgempi import batched, models


def step_flops(batch: int) -> int:
    """Floating-point operations of one local step of LeNet-5 on Fashion-MNIST-sized images."""
    model = models.create("lenet5", in_channels=1, input_size=28)
    x, y = torch.randn(batch, 1, 28, 28), torch.randint(10, (batch,))
    with FlopCounterMode(display=False) as counter:
        F.cross_entropy(model(x), y).backward()
    return counter.get_total_flops()


def peak_gflops(n: int = 1024, repeats: int = 7) -> float:
    """The best of a few n×n float32 matrix products: what this core does at its fastest."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        times.append(time.perf_counter() - start)
    return 2 * n**3 / min(times) / 1e9


def timed(call: Callable[[], object], repeats: int) -> float:
    """Median seconds of ``call`` after one warm-up call."""
    call()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def kernel_floor(batch: int, group: int, repeats: int = 15) -> dict[str, float]:
    """Milliseconds per device-step of each kind of layer's kernels, forward and backward, for
    ``group`` devices laid out as :class:`edgempi.batched.Stacked` lays them out (channel groups
    channels-last; linear layers as W @ x on (devices, features, batch)). The first layer's
    input, the images, takes no gradient, as in a step."""
    model = models.create("lenet5", in_channels=1, input_size=28)
    x = torch.randn(batch, group, 28, 28).contiguous(memory_format=torch.channels_last)
    spent = {"convolutions": 0.0, "max-pools": 0.0, "linear layers": 0.0}
    for layer in batched.pool_before_relu(list(model)):
        if isinstance(layer, nn.Conv2d):
            kind = "convolutions"
            params = [torch.randn(group * layer.out_channels, layer.in_channels, *layer.kernel_size),
                      torch.randn(group * layer.out_channels)]
            def forward(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor, layer: nn.Conv2d = layer) -> torch.Tensor:
                return F.conv2d(x, w, b, layer.stride, layer.padding, layer.dilation, group)
        elif isinstance(layer, nn.MaxPool2d):
            kind, params = "max-pools", []
            def forward(x: torch.Tensor, layer: nn.MaxPool2d = layer) -> torch.Tensor:
                return F.max_pool2d(x, layer.kernel_size, layer.stride)
        elif isinstance(layer, nn.Linear):
            kind = "linear layers"
            params = [torch.randn(group, layer.out_features, layer.in_features),
                      torch.randn(group, layer.out_features, 1)]
            def forward(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
                return torch.baddbmm(b, w, x)
        elif isinstance(layer, nn.Flatten):
            x = x.reshape(batch, group, -1).permute(1, 2, 0).contiguous()
            continue
        else:
            x = layer(x)
            continue
        leaves = [x.requires_grad_(spent["convolutions"] > 0), *(p.requires_grad_() for p in params)]
        out = forward(*leaves)
        wanted = [t for t in leaves if t.requires_grad]
        grad = torch.ones_like(out)
        spent[kind] += timed(lambda leaves=leaves, wanted=wanted, grad=grad:
                             torch.autograd.grad(forward(*leaves), wanted, grad), repeats) / group * 1e3
        x = out.detach()
    return spent


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=16, help="local batch (benchmarks/micro/devices.py uses 16)")
    p.add_argument("--loop-ms", type=float, default=None, help="the loop's measured time per device-step")
    p.add_argument("--groups", type=int, nargs="+", default=[8, 16, 32],
                   help="devices per batched computation, each measured")
    p.add_argument("--repeats", type=int, default=3, help="times the kernel floor is measured (median)")
    args = p.parse_args()
    torch.set_num_threads(1)
    flops = step_flops(args.batch)
    rates = [peak_gflops() for _ in range(3)]
    peak = statistics.median(rates)
    floor_ms = flops / peak / 1e6
    line = (f"LeNet-5, batch {args.batch}: {flops / 1e6:.1f} MFLOP a device-step; one core's float32 matrix "
            f"product {peak:.1f} GFLOP/s (median of {len(rates)}); a device-step takes at least {floor_ms:.2f} ms")
    if args.loop_ms:
        line += (f"; the loop's {args.loop_ms:.2f} ms runs at {flops / args.loop_ms / 1e6:.1f} GFLOP/s, "
                 f"so batching can gain at most {args.loop_ms / floor_ms:.1f}x")
    print(line)
    best = None
    for group in args.groups:
        runs = [kernel_floor(args.batch, group) for _ in range(args.repeats)]
        parts = {kind: statistics.median(run[kind] for run in runs) for kind in runs[0]}
        total = sum(parts.values())
        print(f"torch's kernels alone, {group} devices a group (median of {args.repeats}): "
              + ", ".join(f"{kind} {ms:.3f}" for kind, ms in parts.items())
              + f", together {total:.3f} ms a device-step")
        best = min(best or (total, group), (total, group))
    line = f"with torch's kernels a batched device-step takes at least {best[0]:.2f} ms (groups of {best[1]})"
    if args.loop_ms:
        line += f", so batching with them can gain at most {args.loop_ms / best[0]:.1f}x over the loop"
    print(line)


if __name__ == "__main__":
    main()
