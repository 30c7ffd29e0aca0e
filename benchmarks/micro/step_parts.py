"""Where a ``large_batch`` step's time goes, per phase, against the compute-only step.

Run under MPI, e.g. ``mpiexec -n 2 python benchmarks/micro/step_parts.py --model resnet18``.
Times zero_grad, forward, backward, the exchange (``after_backward``) and the optimizer step
on every rank, for the compute-only step, one Allreduce after backward (``bucket_mb=0``) and
the bucketed exchange, alternating blocks. ``perf_counter`` is one clock for all processes of
a host, so it also gives how far apart the ranks end backward (the *skew*, waited for by the
first in any synchronous step) and how long the exchange lasts after the last rank's backward
(the *tail*: the wire time left exposed). For the compute-only step it gives the *spread* of a
rank's step times and the *slowest-rank wait*: the mean over steps of the slowest rank's step
less the mean step, pairing the ranks' i-th steps; these are not synchronised, so it estimates what
a synchronous step would pay for the ranks' noise alone if that noise is independent. Medians
over steps, in ms.
"""
from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from edgempi import algorithms, models
from edgempi.comm import Comm
from edgempi.config import from_dict
from edgempi.flat import FlatModel
from edgempi.train import make_optimizer

PHASES = ("zero", "forward", "backward", "exchange", "optimizer")


def timed_step(model: str, comm: Comm, bucket_mb: float | None, x: torch.Tensor,
               y: torch.Tensor) -> Callable[[], list[float]]:
    """A step that returns its phases' boundaries; ``bucket_mb`` None: no exchange."""
    cfg = from_dict({"model": {"name": model}, "train": {"batch_size": len(y), "lr": 0.01}},
                    [f"algorithm.bucket_mb={bucket_mb or 0}"])
    torch.manual_seed(0)
    flat = FlatModel(models.create(model, in_channels=x.shape[1], input_size=x.shape[2]))
    optimizer = make_optimizer(cfg, flat)
    policy = None if bucket_mb is None else algorithms.policy_class("large_batch")(
        algorithms.Context(cfg, comm, flat, steps_per_epoch=1, optimizer=optimizer))

    def step() -> list[float]:
        marks = [time.perf_counter()]
        flat.zero_grad()
        marks.append(time.perf_counter())
        loss = F.cross_entropy(flat.model(x), y)
        marks.append(time.perf_counter())
        loss.backward()
        marks.append(time.perf_counter())
        if policy is not None:
            policy.after_backward(0)
        marks.append(time.perf_counter())
        optimizer.step()
        loss.item()
        marks.append(time.perf_counter())
        return marks
    return step


def summary(marks: np.ndarray, exchanges: bool) -> str:
    """``marks``: ranks × steps × boundaries."""
    phases = np.median(np.diff(marks, axis=2), axis=(0, 1)) * 1e3
    backward_end, exchange_end = marks[:, :, 3], marks[:, :, 4]
    skew = np.median(backward_end.max(0) - backward_end.min(0)) * 1e3
    tail = np.median(exchange_end.min(0) - backward_end.max(0)) * 1e3
    steps = marks[:, :, -1] - marks[:, :, 0]
    step = np.median(steps.max(0)) * 1e3
    if exchanges:
        ranks = f" | skew {skew:.1f}, tail {tail:.1f}"
    else:  # what waiting for the slowest rank every step would add to these unsynchronised steps
        ranks = (f" | spread {np.median(steps.std(1)) * 1e3:.2f} (std of a rank's steps), "
                 f"slowest-rank wait {(steps.max(0).mean() - steps.mean()) * 1e3:.2f}")
    return (" ".join(f"{name} {ms:.1f}" for name, ms in zip(PHASES, phases))
            + f"{ranks} | step (slowest rank) {step:.1f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--model", default="lenet5", choices=["lenet5", "resnet18"])
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=10, help="steps per block")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--bucket-mb", type=float, default=4.0)
    args = p.parse_args()
    comm = Comm()
    torch.set_num_threads(1)
    shape = (1, 28) if args.model == "lenet5" else (3, 32)
    torch.manual_seed(0)
    x, y = torch.randn(args.batch, shape[0], shape[1], shape[1]), torch.randint(10, (args.batch,))
    variants = {"compute only": None, "one Allreduce": 0.0, f"buckets of {args.bucket_mb} MiB": args.bucket_mb}
    steps = {name: timed_step(args.model, comm, mb, x, y) for name, mb in variants.items()}
    marks: dict[str, list[list[float]]] = {name: [] for name in steps}
    for repeat in range(args.repeats + 1):  # the first block warms up
        for name, step in steps.items():
            comm.barrier()
            block = [step() for _ in range(args.steps)]
            if repeat:
                marks[name] += block
    gathered = comm.allgather_object(marks)
    if comm.rank == 0:
        print(f"{args.model} ranks={comm.size} batch={args.batch} threads=1, medians (ms) of "
              f"{args.repeats} blocks of {args.steps} steps")
        for name in steps:
            print(f"  {name:>20}: {summary(np.array([g[name] for g in gathered]), variants[name] is not None)}")


if __name__ == "__main__":
    main()
