"""Step time and memory of spatially partitioned training, against the planner's prediction.

One run (under ``mpiexec -n P``): spatial_vgg at 128 px, the first ``--layers`` layers
partitioned on a grid (1×1, 1×2 or 2×2), one grouping (``fused``: one group; ``per_layer``:
a cut before every conv/pool; ``planner``: the DP's choice for the measured profile and link).
Rank 0 prints one JSON line: median step time over ``--steps`` (forward, backward, gradient
Allreduce, SGD), the planner's prediction for the same grouping, and per-rank memory (bytes
saved for backward, and peak RSS growth). In the same run rank 0 alone also trains the
unpartitioned model on the same batch while the other ranks sleep, step by step interleaved
with the partitioned steps: the speedup is the median ratio of the pairs, so load from other
processes on a shared machine falls on both sides alike.

``--sweep`` runs every (P, grouping) as its own ``mpiexec`` (so peak RSS is per run) and prints
the Markdown table of benchmarks/docs/spatial.md; ``--table FILE`` prints it from saved JSON lines.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

GRIDS = {1: (1, 1), 2: (1, 2), 4: (2, 2)}


def _rss_now() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _saved_bytes(step) -> int:
    """Bytes autograd keeps for backward during one forward: the activation memory."""
    seen: dict[tuple[int, int], int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        seen[(t.untyped_storage().data_ptr(), t.untyped_storage().nbytes())] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        step()
    return sum(seen.values())


def _nap() -> None:
    """How the ranks that wait for the single-device peer wait: asleep, leaving the shared cores
    to the one that works (MPI's own wait spins)."""
    time.sleep(1e-3)


def run(args: argparse.Namespace) -> None:
    from edgempi.comm import Comm
    from edgempi.sim import Link
    from edgempi.spatial.model import SpatialModel
    from edgempi.spatial.planner import measure_link, measure_profile, plan_groups, predict
    from edgempi.spatial.vgg import spatial_vgg, split_front

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    comm = Comm()
    grid = GRIDS[comm.size]
    size = (args.size, args.size)
    torch.manual_seed(0)
    model = spatial_vgg(input_size=args.size, width=args.width)
    front, tail = split_front(model, args.layers)
    profile = measure_profile(front, tail, args.batch, 3, size, comm)
    link = measure_link(comm) if comm.size > 1 else Link.symmetric(float("inf"), 0.0)
    cuts = [i for i in range(1, args.layers) if profile.cuttable[i]]
    edges = [0, *cuts, args.layers]
    choices = {"fused": [(0, args.layers - 1)], "per_layer": [(a, b - 1) for a, b in zip(edges, edges[1:])]}
    choices["planner"] = plan_groups(profile, link, grid).groups
    groups = choices[args.groups]
    peer = copy.deepcopy(model)
    net = SpatialModel(front, tail, comm, grid, groups, size)
    x = torch.randn(args.batch, 3, *size)
    y = torch.randint(0, 10, (args.batch,))
    spatial_step, peer_step = _stepper(net, x, y), _stepper(peer, x, y)

    rss0 = _rss_now()
    saved = _saved_bytes(spatial_step)
    spatial_step()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - rss0
    peer_saved = _saved_bytes(peer_step) if comm.rank == 0 else 0
    spatial_s, peer_s = [], []
    for _ in range(args.steps):
        comm.barrier(idle=_nap)
        if comm.rank == 0:
            peer_s.append(_seconds(peer_step))
        comm.barrier(idle=_nap)
        spatial_s.append(_seconds(spatial_step))
    measured = float(comm.reduce_metrics([np.median(spatial_s)], op="max")[0])
    mem = comm.allgather_object((saved, rss))
    if comm.rank == 0:
        predicted = predict(profile, link, grid, groups)
        print(json.dumps({
            "P": comm.size, "grid": grid, "groups": args.groups, "cuts": [list(g) for g in groups],
            "measured_ms": measured * 1e3, "peer_ms": float(np.median(peer_s)) * 1e3,
            "speedup": float(np.median(np.array(peer_s) / np.array(spatial_s))),
            "predicted_ms": predicted.predicted_s * 1e3, "one_device_model_ms": predicted.one_device_s * 1e3,
            "saved_mb": [s / 2**20 for s, _ in mem], "peer_saved_mb": peer_saved / 2**20,
            "rss_growth_mb": [r / 2**20 for _, r in mem],
            "link": str(link), "plan": str(predicted) if args.groups == "planner" else None,
        }), flush=True)


def _stepper(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> Callable[[], None]:
    """One training step: forward, backward, (the front's gradient Allreduce), SGD."""
    from edgempi.spatial.model import SpatialModel

    opt = torch.optim.SGD(net.parameters(), lr=0.01)

    def step() -> None:
        opt.zero_grad(set_to_none=False)
        nn.functional.cross_entropy(net(x), y).backward()
        if isinstance(net, SpatialModel):
            net.allreduce_grads_()
        opt.step()

    return step


def _seconds(step: Callable[[], None]) -> float:
    start = time.perf_counter()
    step()
    return time.perf_counter() - start


def sweep(args: argparse.Namespace) -> list[dict]:
    """Every configuration as its own job (so peak RSS is per configuration)."""
    rows = []
    for ranks, groups in [(1, "fused"), *[(p, g) for p in (2, 4) for g in ("fused", "per_layer", "planner")]]:
        cmd = ["mpiexec", "-n", str(ranks), sys.executable, __file__, "--groups", groups,
               *(f"--{k}={v}" for k, v in vars(args).items() if k not in ("groups", "sweep", "table"))]
        line = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
        print(line, file=sys.stderr, flush=True)
        rows.append(json.loads(line))
    return rows


def table(rows: list[dict]) -> str:
    """The Markdown table of benchmarks/docs/spatial.md."""
    out = ["| P | grid | grouping | groups | step (ms) | predicted (ms) | 1-device peer (ms) "
           "| speedup vs peer | saved for backward per rank (MB) | peak RSS growth per rank (MB) |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        out.append(f"| {r['P']} | {r['grid'][0]}×{r['grid'][1]} | {r['groups']} | {len(r['cuts'])} "
                   f"| {r['measured_ms']:.0f} | {r['predicted_ms']:.0f} | {r['peer_ms']:.0f} "
                   f"| {r['speedup']:.2f}× | {max(r['saved_mb']):.1f} (peer {r['peer_saved_mb']:.1f}) "
                   f"| {max(r['rss_growth_mb']):.0f} |")
    out += [f"\nP={r['P']}, link measured {r['link']}:\n```\n{r['plan']}\n```"
            for r in rows if r["plan"] and r["P"] > 1]
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--groups", default="fused", choices=["fused", "per_layer", "planner"])
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--layers", type=int, default=21)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--sweep", action="store_true", help="run every configuration, print the table")
    parser.add_argument("--table", help="print the table of a file of JSON lines (e.g. from Slurm)")
    args = parser.parse_args()
    if args.table:
        with open(args.table) as f:
            print(table([json.loads(line) for line in f if line.strip()]))
    elif args.sweep:
        print(table(sweep(args)))
    else:
        run(args)


if __name__ == "__main__":
    main()
