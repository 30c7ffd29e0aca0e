"""Where a batched group of LeNet-5 device-steps spends its time (``parallel.batched``), in one
process on one thread: the top operators of :class:`edgempi.batched.Stacked`'s forward and
backward (``torch.profiler``, self CPU time) for one group, and the time per device-step of the
group against the same devices' steps one after another (forward, backward, as the loop),
alternating, medians over repeats. No MPI, no data loading, no optimizer: the part that batching
changes.

    OMP_NUM_THREADS=1 python benchmarks/micro/batched_profile.py --group 32 --batch 16
"""
from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile

from edgempi import batched, models
from edgempi.host.heap import keep_freed_memory


def steps(group: int, batch: int) -> tuple[Callable[[], None], Callable[[], None]]:
    """The stacked step and the loop's steps over the same rows, images and labels."""
    torch.manual_seed(0)
    model = models.create("lenet5", in_channels=1, input_size=28)
    rows = torch.stack([torch.nn.utils.parameters_to_vector(models.create("lenet5").parameters()).detach()
                        for _ in range(group)])
    images, labels = torch.randn(group, batch, 1, 28, 28), torch.randint(0, 10, (group, batch))
    stacked = batched.Stacked(model)

    def together() -> None:
        leaf = rows.clone().requires_grad_()
        torch.autograd.grad(stacked.losses(leaf, images, labels).sum(), leaf)

    def one_by_one() -> None:
        for d in range(group):
            torch.nn.utils.vector_to_parameters(rows[d], model.parameters())
            model.zero_grad()
            F.cross_entropy(model(images[d]), labels[d]).backward()
    return together, one_by_one


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--group", type=int, default=batched.GROUP, help="devices per stacked computation")
    p.add_argument("--batch", type=int, default=16, help="local batch (benchmarks/micro/devices.py uses 16)")
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--rows", type=int, default=12, help="operators listed")
    args = p.parse_args()
    torch.set_num_threads(1)
    keep_freed_memory()  # as edgempi run does, so the figures are a run's
    together, one_by_one = steps(args.group, args.batch)
    for _ in range(3):
        together()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(5):
            together()
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.rows))
    times: dict[str, list[float]] = {"batched": [], "loop": []}
    for _ in range(args.repeats):
        for name, run in (("batched", together), ("loop", one_by_one)):
            started = time.perf_counter()
            run()
            times[name].append((time.perf_counter() - started) / args.group * 1e3)
    ms = {name: statistics.median(t) for name, t in times.items()}
    print(f"LeNet-5, {args.group} devices × batch {args.batch}, forward + backward, median of {args.repeats}: "
          f"batched {ms['batched']:.3f} ms, loop {ms['loop']:.3f} ms a device-step ({ms['loop'] / ms['batched']:.2f}x)")


if __name__ == "__main__":
    main()
