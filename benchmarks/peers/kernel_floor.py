"""The kernel time of one round of the peers' workload: what no engine's round can go below.

A round of ``flower.py``'s workload is C devices × one local epoch: for each device, its
steps of forward, backward and SGD update of LeNet-5 on its batch (32 images, or its whole
smaller shard). This times that step in plain torch, one thread, warm, the model and a batch
already in memory (no data, no copies, no averaging, no messages), in CPU seconds (so that a
loaded machine's waiting is not counted), and gives the round's kernel time on 2 cores (the
cohort split over both, as every engine splits it):

    OMP_NUM_THREADS=1 python benchmarks/peers/kernel_floor.py --devices 100 1000 10000 --cohort 10 100
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from workload import RANKS, TRAIN_IMAGES, epoch_steps

from edgempi import models


def step_ms(batch: int, repeats: int = 200) -> tuple[float, float]:
    """Median CPU and wall-clock milliseconds of one plain torch SGD step of LeNet-5 on ``batch``
    Fashion-MNIST-sized images."""
    torch.manual_seed(0)
    model = models.create("lenet5", in_channels=1, input_size=28)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    x, y = torch.randn(batch, 1, 28, 28), torch.randint(10, (batch,))
    cpu, wall = [], []
    for i in range(repeats + 20):
        start, began = time.process_time(), time.perf_counter()
        optimizer.zero_grad()
        F.cross_entropy(model(x), y).backward()
        optimizer.step()
        if i >= 20:
            cpu.append(time.process_time() - start)
            wall.append(time.perf_counter() - began)
    return 1e3 * statistics.median(cpu), 1e3 * statistics.median(wall)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--devices", type=int, nargs="+", default=[100, 1000, 10000])
    p.add_argument("--cohort", type=int, nargs="+", default=[10, 100])
    args = p.parse_args()
    torch.set_num_threads(1)
    print("| devices | cohort | batch | steps a device | ms a step, CPU / wall (1 thread) "
          "| kernel s a round on 2 cores, CPU / wall |")
    print("| --- | --- | --- | --- | --- | --- |")
    for devices in args.devices:
        batch = min(32, TRAIN_IMAGES // devices)
        cpu, wall = step_ms(batch)
        for cohort in (c for c in args.cohort if c <= devices):
            share = cohort * epoch_steps(devices) / 1e3 / RANKS  # step-seconds per core for 1 ms a step
            print(f"| {devices:,} | {cohort} | {batch} | {epoch_steps(devices)} | {cpu:.2f} / {wall:.2f} "
                  f"| {share * cpu:.3f} / {share * wall:.3f} |")


if __name__ == "__main__":
    main()
