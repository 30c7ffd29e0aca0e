"""Per-step time of edgempi's ``large_batch`` against torch DistributedDataParallel (gloo),
and, with ``--compressors``, of ``large_batch`` with each compressor against ``none``.

Run under MPI, e.g. ``mpiexec -n 4 python benchmarks/micro/step_vs_ddp.py --model resnet18``.
All variants train the same model on the same local batch in the same processes, alternating
blocks of steps so machine noise hits them alike; the ratios of medians are printed.

    mpiexec -n 4 python benchmarks/micro/step_vs_ddp.py --compressors fp16 topk:ratio=0.001 qsgd
"""
from __future__ import annotations

import argparse
import os
import socket
import statistics
import time
from typing import Callable

import torch
import torch.distributed as dist
import torch.nn.functional as F

from edgempi import algorithms, models
from edgempi.comm import Comm
from edgempi.config import from_dict
from edgempi.flat import FlatModel
from edgempi.topology import threads_per_rank
from edgempi.train import make_optimizer


def compression_overrides(spec: str) -> list[str]:
    """``topk:ratio=0.001`` → the config overrides of that compression setting."""
    name, _, options = spec.partition(":")
    return [f"compression.name={name}", *(f"compression.{kv}" for kv in options.split(",") if kv)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--model", default="lenet5", choices=["lenet5", "resnet18"])
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=10, help="steps per timed block")
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--compressors", nargs="*", default=[], metavar="NAME[:KEY=VALUE,...]",
                   help="also time large_batch with these compression settings, e.g. topk:ratio=0.001")
    args = p.parse_args()

    comm = Comm()
    shape = (1, 28) if args.model == "lenet5" else (3, 32)
    base = {"model": {"name": args.model}, "train": {"batch_size": args.batch, "lr": 0.01}}
    cfg = from_dict(base)
    torch.set_num_threads(threads_per_rank(cfg, comm))
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(comm.broadcast_object(free_port())))
    dist.init_process_group("gloo", rank=comm.rank, world_size=comm.size)

    torch.manual_seed(0)
    x = torch.randn(args.batch, shape[0], shape[1], shape[1])
    y = torch.randint(10, (args.batch,))

    ours = FlatModel(models.create(args.model, in_channels=shape[0], input_size=shape[1]))
    ours_opt = make_optimizer(cfg, ours)
    variants = {"none": cfg, **{spec: from_dict(base, compression_overrides(spec)) for spec in args.compressors}}
    policies = {name: algorithms.policy_class(c.algorithm.name)(algorithms.Context(c, comm, ours, 1, ours_opt))
                for name, c in variants.items()}

    ddp = torch.nn.parallel.DistributedDataParallel(models.create(args.model, in_channels=shape[0],
                                                                  input_size=shape[1]))
    ddp_opt = torch.optim.SGD(ddp.parameters(), lr=0.01)

    def edgempi_step(policy: algorithms.Policy) -> Callable[[], float]:
        def step() -> float:
            ours.zero_grad()
            loss = F.cross_entropy(ours.model(x), y)
            loss.backward()
            policy.after_backward(0)
            ours_opt.step()
            return loss.item()
        return step

    def ddp_step() -> float:
        ddp_opt.zero_grad()
        loss = F.cross_entropy(ddp(x), y)
        loss.backward()
        ddp_opt.step()
        return loss.item()

    def block(step) -> float:
        comm.barrier()
        start = time.perf_counter()
        for _ in range(args.steps):
            step()
        comm.barrier()
        return (time.perf_counter() - start) / args.steps

    steps = {**{name: edgempi_step(policy) for name, policy in policies.items()}, "ddp": ddp_step}
    for step in steps.values():  # warm-up: allocator, gloo connections, compressor state
        block(step)
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(args.repeats):
        for name, step in steps.items():
            times[name].append(block(step))
    if comm.rank == 0:
        ms = {name: statistics.median(t) * 1e3 for name, t in times.items()}
        print(f"{args.model} ranks={comm.size} batch={args.batch}: edgempi {ms['none']:.2f} ms/step, "
              f"DDP {ms['ddp']:.2f} ms/step, ratio {ms['none'] / ms['ddp']:.3f}")
        for name in args.compressors:
            print(f"  large_batch with {name}: {ms[name]:.2f} ms/step, ratio to none {ms[name] / ms['none']:.3f}")
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
