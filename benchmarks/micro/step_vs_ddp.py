"""Per-step time of edgempi's ``large_batch`` against torch DistributedDataParallel (gloo).

Run under MPI, e.g. ``mpiexec -n 4 python benchmarks/micro/step_vs_ddp.py --model resnet18``.
Both sides train the same model on the same local batch in the same processes, alternating
blocks of steps so machine noise hits both alike; the ratio of medians is printed.
"""
from __future__ import annotations

import argparse
import os
import socket
import statistics
import time

import torch
import torch.distributed as dist
import torch.nn.functional as F

from edgempi import algorithms, models
from edgempi.comm import Comm
from edgempi.config import from_dict
from edgempi.flat import FlatModel
from edgempi.train import make_optimizer, threads_per_rank


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
    args = p.parse_args()

    comm = Comm()
    shape = (1, 28) if args.model == "lenet5" else (3, 32)
    cfg = from_dict({"model": {"name": args.model}, "train": {"batch_size": args.batch, "lr": 0.01}})
    torch.set_num_threads(threads_per_rank(cfg, comm))
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(comm.broadcast_object(free_port())))
    dist.init_process_group("gloo", rank=comm.rank, world_size=comm.size)

    torch.manual_seed(0)
    x = torch.randn(args.batch, shape[0], shape[1], shape[1])
    y = torch.randint(10, (args.batch,))

    ours = FlatModel(models.create(args.model, in_channels=shape[0], input_size=shape[1]))
    policy = algorithms.create(algorithms.Context(cfg, comm, ours, steps_per_epoch=1))
    ours_opt = make_optimizer(cfg, ours)

    ddp = torch.nn.parallel.DistributedDataParallel(models.create(args.model, in_channels=shape[0],
                                                                  input_size=shape[1]))
    ddp_opt = torch.optim.SGD(ddp.parameters(), lr=0.01)

    def edgempi_step() -> float:
        ours.zero_grad()
        loss = F.cross_entropy(ours.model(x), y)
        loss.backward()
        policy.after_backward(0)
        ours_opt.step()
        return loss.item()

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

    for step in (edgempi_step, ddp_step):  # warm-up: allocator, gloo connections
        block(step)
    times = {"edgempi": [], "ddp": []}
    for _ in range(args.repeats):
        times["edgempi"].append(block(edgempi_step))
        times["ddp"].append(block(ddp_step))
    if comm.rank == 0:
        ours_ms, ddp_ms = (statistics.median(times[k]) * 1e3 for k in ("edgempi", "ddp"))
        print(f"{args.model} ranks={comm.size} batch={args.batch}: edgempi {ours_ms:.2f} ms/step, "
              f"DDP {ddp_ms:.2f} ms/step, ratio {ours_ms / ddp_ms:.3f}")
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
