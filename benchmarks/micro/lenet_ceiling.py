"""How fast could a LeNet-5 device-step be on one core, and how near is the batched step? Floors:

- the arithmetic of one local step (forward, backward, as counted by ``torch.utils.flop_counter``)
  over this core's best single-precision rate (a large matrix product, one thread): the time no
  batching of devices can beat, whatever its kernels;
- torch's own kernels, as the batched path (``edgempi/batched.py``) calls them for a group of
  devices: each convolution, max-pool and linear layer forward and backward on its own, warm,
  with nothing else running (no ReLU, loss, optimizer or data): the time no rearrangement of
  torch calls can beat, short of kernels of its own;
- a fair floor: those kernels plus the rest of the work a step cannot skip, each torch's own
  operator on its own (the ReLUs and the loss warm, the optimizer update of the group's rows
  with their momentum rows out of the caches, as in a run of many devices, the gather and
  normalisation of the group's images warm).

Each floor, set beside the loop's time per device-step (``--loop-ms``, from
``benchmarks/micro/devices.py``), bounds what batching can gain over the loop. ``--step-devices D``
also times the batched step itself (:meth:`edgempi.batched.BatchedSteps.steps` of a real run,
FedAvg, Fashion-MNIST, SGD with momentum 0.9, D devices on this one rank), alternating with the
floors of its group size, and prints it as a ratio to each floor, repeat by repeat, with medians.
Times are the process's CPU time (``--clock cpu``, the default): on a shared machine the time
other processes take is not counted, though their pressure on the caches still is.

    OMP_NUM_THREADS=1 python benchmarks/micro/lenet_ceiling.py --batch 16 --loop-ms 3.1
    OMP_NUM_THREADS=1 python benchmarks/micro/lenet_ceiling.py --batch 16 --step-devices 50 --repeats 7
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from edgempi import batched, models
from edgempi.util import optim

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "quickstart.yaml"
CLOCKS = {"cpu": time.process_time, "wall": time.perf_counter}
clock = CLOCKS["cpu"]
KERNELS = ("convolutions", "max-pools", "linear layers")


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
        start = clock()
        torch.mm(a, b)
        times.append(clock() - start)
    return 2 * n**3 / min(times) / 1e9


def timed(call: Callable[[], object], repeats: int, before: Callable[[], object] = lambda: None) -> float:
    """Median seconds of ``call`` after one warm-up call, each after ``before`` (not timed)."""
    call()
    times = []
    for _ in range(repeats):
        before()
        start = clock()
        call()
        times.append(clock() - start)
    return statistics.median(times)


def kernel_floor(batch: int, group: int, repeats: int = 15) -> dict[str, float]:
    """Milliseconds per device-step of each kind of layer's kernels, forward and backward, for
    ``group`` devices laid out as :class:`edgempi.batched.Stacked` lays them out (channel groups
    channels-last; linear layers as W @ x on (devices, features, batch)), and of the ReLUs and
    the loss between and after them (in the fair floor, not in torch's kernel floor, ``KERNELS``).
    The first layer's input, the images, takes no gradient, as in a step."""
    model = models.create("lenet5", in_channels=1, input_size=28)
    x = torch.randn(batch, group, 28, 28).contiguous(memory_format=torch.channels_last)
    spent = dict.fromkeys([*KERNELS, "ReLUs", "loss"], 0.0)
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
        elif isinstance(layer, nn.ReLU):
            kind, params, forward = "ReLUs", [], F.relu
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
        spent[kind] += timed(lambda leaves=leaves, wanted=wanted, grad=grad, forward=forward:
                             torch.autograd.grad(forward(*leaves), wanted, grad), repeats) / group * 1e3
        x = out.detach()
    logits, labels = x.requires_grad_(), torch.randint(x.shape[1], (group, batch))
    spent["loss"] = timed(lambda: torch.autograd.grad(
        F.cross_entropy(logits, labels, reduction="none").mean(1).sum(), logits), repeats) / group * 1e3
    return spent


def update_and_data_floor(batch: int, group: int, repeats: int = 15) -> dict[str, float]:
    """Milliseconds per device-step of the rest of a step's work, torch's operators on their own:
    the optimizer's update (SGD, momentum 0.9, as ``benchmarks/micro/devices.py`` trains) of the
    group's rows and momentum rows, and the gather of the group's batches from Fashion-MNIST-sized
    uint8 images with their normalisation, as one operation for the group.

    The update is timed with its rows out of the caches (64 MB written before each), as in a run:
    a group's momentum rows were last touched a step ago, before every other group's work. Warm,
    it measured 4x faster, an update no run of many devices gets."""
    rows = torch.randn(group, sum(p.numel() for p in models.create("lenet5").parameters()))
    rows.grad = torch.randn_like(rows)
    optimizer = optim.SGD([rows], lr=0.01, momentum=0.9)
    optimizer.step()  # its momentum rows exist from here on, as after a device's first step
    images, labels = torch.randint(256, (60 * group, 1, 28, 28), dtype=torch.uint8), torch.randint(10, (60 * group,))
    index = torch.randperm(60 * group)[:group * batch]

    def gather() -> tuple[torch.Tensor, torch.Tensor]:
            return (torch.addcmul(torch.tensor(-0.81), images.index_select(0, index).float(), torch.tensor(0.011)),
                labels.index_select(0, index))
    evict = torch.zeros(16 * 2**20)
    return {"optimizer": timed(optimizer.step, repeats, partial(evict.add_, 1)) / group * 1e3,
            "data": timed(gather, repeats) / group * 1e3}


def batched_step(batch: int, devices: int) -> Callable[[], float]:
    """One local step of every device of a real run's :class:`edgempi.batched.BatchedSteps`
    (``benchmarks/micro/devices.py``'s FedAvg workload, ``devices`` devices on this one rank);
    each call takes the next step."""
    from edgempi import config, train
    from edgempi.comm import Comm
    from edgempi.host.heap import keep_freed_memory

    keep_freed_memory()  # as edgempi run does, so the step's allocations are a run's
    cfg = config.load(CONFIG, ["algorithm.name=fedavg", "algorithm.local_steps=2", "train.epochs=null",
                               "train.steps=1000000", f"train.batch_size={batch}", "train.momentum=0.9",
                               "data.min_samples=1", f"parallel.devices_per_rank={devices}", "parallel.batched=on"])
    comm = Comm()
    trainer = train.Trainer(train.build(cfg, comm), comm)
    steps = iter(range(cfg.train.steps))
    return lambda: trainer.local.steps(next(steps))


def floors(batch: int, group: int) -> dict[str, float]:
    """Every part of the fair floor, milliseconds per device-step (``KERNELS``: torch's kernel floor)."""
    return {**kernel_floor(batch, group), **update_and_data_floor(batch, group)}


def step_against_floors(args: argparse.Namespace) -> None:
    """The batched step's time per device-step and the floors of its group size, alternating,
    each repeat's ratios and their medians."""
    groups = -(-args.step_devices // batched.GROUP)
    group = round(args.step_devices / groups)
    step = batched_step(args.batch, args.step_devices)
    load = [uptime()]
    rows = []
    for _ in range(args.repeats):
        ms = timed(step, args.step_repeats) / args.step_devices * 1e3
        parts = floors(args.batch, group)
        kernels, fair = sum(parts[k] for k in KERNELS), sum(parts.values())
        rows.append({"step": ms, "kernels": kernels, "fair": fair, "vs kernels": ms / kernels,
                     "vs fair": ms / fair, **parts})
        print(f"batched step {ms:.3f} ms a device-step; torch's kernels {kernels:.3f} ({ms / kernels:.2f}x), "
              f"fair floor {fair:.3f} ({ms / fair:.2f}x)", flush=True)
    load.append(uptime())
    median = {key: statistics.median(row[key] for row in rows) for key in rows[0]}
    print(f"LeNet-5, batch {args.batch}, {args.step_devices} devices on one rank in groups of ~{group}, "
          f"{args.clock} time, medians of {args.repeats}: batched step {median['step']:.3f} ms a device-step, "
          f"{median['vs kernels']:.2f}x torch's kernels ({median['kernels']:.3f} ms), "
          f"{median['vs fair']:.2f}x the fair floor ({median['fair']:.3f} ms: "
          + ", ".join(f"{k} {median[k]:.3f}" for k in [*KERNELS, "ReLUs", "loss", "optimizer", "data"])
          + f"); load average {load[0]} before, {load[1]} after")


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.split("load average:")[-1].strip()


def arithmetic_floor(args: argparse.Namespace) -> None:
    """The arithmetic floor: the step's FLOPs at one core's best matrix-product rate."""
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


def group_floors(args: argparse.Namespace) -> None:
    """torch's kernel floor and the fair floor for each group size, and the best group."""
    best = None
    for group in args.groups:
        runs = [floors(args.batch, group) for _ in range(args.repeats)]
        parts = {kind: statistics.median(run[kind] for run in runs) for kind in runs[0]}
        total = sum(parts[kind] for kind in KERNELS)
        print(f"torch's kernels alone, {group} devices a group (median of {args.repeats}): "
              + ", ".join(f"{kind} {parts[kind]:.3f}" for kind in KERNELS)
              + f", together {total:.3f} ms a device-step; with "
              + ", ".join(f"{kind} {ms:.3f}" for kind, ms in parts.items() if kind not in KERNELS)
              + f", the fair floor {sum(parts.values()):.3f}")
        best = min(best or (total, group), (total, group))
    line = f"with torch's kernels a batched device-step takes at least {best[0]:.2f} ms (groups of {best[1]})"
    if args.loop_ms:
        line += f", so batching with them can gain at most {args.loop_ms / best[0]:.1f}x over the loop"
    print(line)


def main() -> None:
    global clock
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=16, help="local batch (benchmarks/micro/devices.py uses 16)")
    p.add_argument("--loop-ms", type=float, default=None, help="the loop's measured time per device-step")
    p.add_argument("--groups", type=int, nargs="+", default=[8, 16, 32],
                   help="devices per batched computation, each measured")
    p.add_argument("--repeats", type=int, default=3, help="times the floors (and the step) are measured (median)")
    p.add_argument("--step-devices", type=int, default=None,
                   help="time the batched step of this many devices on one rank against its floors, instead")
    p.add_argument("--step-repeats", type=int, default=5, help="local steps a step's time is the median of")
    p.add_argument("--clock", choices=CLOCKS, default="cpu", help="the process's CPU time, or wall time")
    args = p.parse_args()
    torch.set_num_threads(1)
    clock = CLOCKS[args.clock]
    if args.step_devices:
        return step_against_floors(args)
    arithmetic_floor(args)
    group_floors(args)


if __name__ == "__main__":
    main()
