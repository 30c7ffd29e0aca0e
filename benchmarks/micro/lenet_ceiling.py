"""How fast could a LeNet-5 device-step be on one core? The arithmetic of one local step
(forward, backward, as counted by ``torch.utils.flop_counter``) over this core's best
single-precision rate (a large matrix product, one thread): the time no batching of devices can
beat, and so the largest speed-up over the one-device-at-a-time loop that batching could give.

    OMP_NUM_THREADS=1 python benchmarks/micro/lenet_ceiling.py --batch 16 --loop-ms 2.70
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from edgempi import models


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


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=16, help="local batch (benchmarks/micro/devices.py uses 16)")
    p.add_argument("--loop-ms", type=float, default=None, help="the loop's measured time per device-step")
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


if __name__ == "__main__":
    main()
