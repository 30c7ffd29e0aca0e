"""Per-step time of edgempi's ``large_batch`` (its Allreduce in buckets during backward) against
the same step without any exchange (compute only), against torch DistributedDataParallel
(gloo) and against one Allreduce after backward (``algorithm.bucket_mb=0``); with
``--compressors``, also ``large_batch`` with each compressor against ``none``.

Run under MPI, e.g. ``mpiexec -n 4 python benchmarks/micro/step_vs_ddp.py --model resnet18``.
All variants train the same model (each its own copy, from the same initial weights) on the
same local batch in the same processes, alternating blocks of steps so machine noise hits them
alike; medians over the blocks, and their ratios, are printed.

    mpiexec -n 4 python benchmarks/micro/step_vs_ddp.py --compressors fp16 topk:ratio=0.001 qsgd
"""
from __future__ import annotations

import argparse
import os
import socket
import statistics
import time
from collections.abc import Callable

import torch
import torch.distributed as dist
import torch.nn.functional as F

from edgempi import algorithms, models
from edgempi.comm import Comm
from edgempi.config import RunConfig, from_dict
from edgempi.flat import FlatModel
from edgempi.host.heap import keep_freed_memory
from edgempi.host.topology import node_share
from edgempi.train import make_optimizer

Step = Callable[[], float]


def compression_overrides(spec: str) -> list[str]:
    """``topk:ratio=0.001`` → the config overrides of that compression setting."""
    name, _, options = spec.partition(":")
    return [f"compression.name={name}", *(f"compression.{kv}" for kv in options.split(",") if kv)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--model", default="lenet5", choices=["lenet5", "resnet18"])
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=10, help="steps per timed block")
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--set", dest="overrides", nargs="*", default=[], metavar="KEY=VALUE",
                   help="config overrides of every large_batch variant, e.g. algorithm.bucket_mb=1")
    p.add_argument("--compressors", nargs="*", default=[], metavar="NAME[:KEY=VALUE,...]",
                   help="also time large_batch with these compression settings, e.g. topk:ratio=0.001")
    return p.parse_args()


def edgempi_step(cfg: RunConfig, comm: Comm, args: argparse.Namespace, x: torch.Tensor, y: torch.Tensor,
                 exchange: bool) -> Step:
    """The loop's step for one device (:meth:`edgempi.train.Trainer.train_step`): zero the flat
    gradient, forward, backward, the policy's exchange (unless compute only), one optimizer step."""
    torch.manual_seed(0)
    flat = FlatModel(models.create(args.model, in_channels=x.shape[1], input_size=x.shape[2]))
    optimizer = make_optimizer(cfg, flat)
    # The policy hooks into backward (its buckets), so the compute-only model has none.
    policy = algorithms.policy_class(cfg.algorithm.name)(
        algorithms.Context(cfg, comm, flat, steps_per_epoch=1, optimizer=optimizer)) if exchange else None

    def step() -> float:
        flat.zero_grad()
        loss = F.cross_entropy(flat.model(x), y)
        loss.backward()
        if policy is not None:
            policy.after_backward(0)
        optimizer.step()
        return loss.item()
    return step


def ddp_step(args: argparse.Namespace, x: torch.Tensor, y: torch.Tensor) -> Step:
    torch.manual_seed(0)
    ddp = torch.nn.parallel.DistributedDataParallel(models.create(args.model, in_channels=x.shape[1],
                                                                  input_size=x.shape[2]))
    optimizer = torch.optim.SGD(ddp.parameters(), lr=0.01)

    def step() -> float:
        optimizer.zero_grad()
        loss = F.cross_entropy(ddp(x), y)
        loss.backward()
        optimizer.step()
        return loss.item()
    return step


def main() -> None:
    args = parse_args()
    comm = Comm()
    base = {"model": {"name": args.model}, "train": {"batch_size": args.batch, "lr": 0.01}}
    cfg = from_dict(base, args.overrides)
    torch.set_num_threads(cfg.train.threads or node_share(comm).threads)
    keep_freed_memory()  # as edgempi run does, so the figures are a run's
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(comm.allgather_object(free_port())[0]))
    dist.init_process_group("gloo", rank=comm.rank, world_size=comm.size)

    shape = (1, 28) if args.model == "lenet5" else (3, 32)
    torch.manual_seed(0)
    x = torch.randn(args.batch, shape[0], shape[1], shape[1])
    y = torch.randint(10, (args.batch,))
    steps = {"compute": edgempi_step(cfg, comm, args, x, y, exchange=False),
             "none": edgempi_step(cfg, comm, args, x, y, exchange=True),
             "single": edgempi_step(from_dict(base, [*args.overrides, "algorithm.bucket_mb=0"]), comm, args, x, y,
                                    exchange=True),
             **{spec: edgempi_step(from_dict(base, [*args.overrides, *compression_overrides(spec)]), comm, args,
                                   x, y, exchange=True) for spec in args.compressors},
             "ddp": ddp_step(args, x, y)}

    def block(step: Step) -> float:
        comm.barrier()
        start = time.perf_counter()
        for _ in range(args.steps):
            step()
        comm.barrier()
        return (time.perf_counter() - start) / args.steps

    for step in steps.values():  # warm-up: allocator, gloo connections, compressor state
        block(step)
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(args.repeats):
        for name, step in steps.items():
            times[name].append(block(step))
    if comm.rank == 0:
        report(args, comm.size, {name: statistics.median(t) * 1e3 for name, t in times.items()})
    dist.destroy_process_group()


def report(args: argparse.Namespace, ranks: int, ms: dict[str, float]) -> None:
    print(f"{args.model} ranks={ranks} batch={args.batch} threads={torch.get_num_threads()} "
          f"medians of {args.repeats} blocks of {args.steps} steps: compute only {ms['compute']:.2f} ms/step, "
          f"large_batch {ms['none']:.2f}, DDP {ms['ddp']:.2f}; large_batch / compute {ms['none'] / ms['compute']:.3f}, "
          f"large_batch / DDP {ms['none'] / ms['ddp']:.3f}; with one Allreduce after backward (bucket_mb=0) "
          f"{ms['single']:.2f}, / compute {ms['single'] / ms['compute']:.3f}")
    for name in args.compressors:
        print(f"  large_batch with {name}: {ms[name]:.2f} ms/step, ratio to none {ms[name] / ms['none']:.3f}")


if __name__ == "__main__":
    main()
