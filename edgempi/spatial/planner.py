"""Choosing layer groups: fuse more layers (more redundant halo work) or exchange more often.

The step-time model, per group of the front on an R×C grid (P ranks):

* compute: the slowest rank's Σ over the group's layers of (forward+backward seconds per output
  pixel, measured on one device) × (pixels that rank computes, halos included);
* exchange at the group's input (not for the first group): the tiles of the previous group's
  output move to the regions this group needs, forward and once more backward (halo
  gradients), each ``latency × peers + bytes / bandwidth`` for the busiest rank (the uplink's
  bandwidth: the slower way of an edge link);
* once per step: the gather of the last tiles to every rank, one latency per BatchNorm
  reduction (forward and backward), the ring Allreduce of the front's weight gradients
  (2 (P−1)/P of their bytes), and the tail, run on every rank.

Because each group's output is cut evenly whatever the grouping before it, a group's cost
depends only on its own layers, and dynamic programming over the cut points finds the
grouping of least predicted step time. Cuts fall only before a conv or pooling layer: a cut
before a pointwise layer exchanges as much and saves no halo.
"""
from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from edgempi.comm import Comm
from edgempi.sim import Link
from edgempi.spatial.geometry import GroupPlan, Window, intersect, plan_front, sizes_through, split, width
from edgempi.spatial.layers import NORMS, is_windowed, windows


@dataclass(frozen=True)
class Profile:
    """What the model needs about a front, measured on one device at the training batch size."""

    seconds_per_pixel: tuple[float, ...]
    windows: tuple[tuple[Window, Window], ...]
    channels: tuple[int, ...]
    norms: tuple[bool, ...]
    cuttable: tuple[bool, ...]
    input_size: tuple[int, int]
    batch: int
    itemsize: int
    front_params: int
    tail_s: float

    def sizes(self) -> list[tuple[int, int]]:
        """(H, W) at every layer boundary."""
        rows = sizes_through([w for w, _ in self.windows], self.input_size[0])
        cols = sizes_through([w for _, w in self.windows], self.input_size[1])
        return list(zip(rows, cols))


@dataclass
class Plan:
    """A grouping with its predicted step time and where the time goes."""

    groups: list[tuple[int, int]]
    grid: tuple[int, int]
    link: Link
    predicted_s: float
    one_device_s: float
    parts: dict[str, float] = field(default_factory=dict)
    lines: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        r, c = self.grid
        head = (f"spatial plan, grid {r}x{c}, link {self.link}: groups {[list(g) for g in self.groups]}, "
                f"predicted step {self.predicted_s * 1e3:.1f} ms (one device {self.one_device_s * 1e3:.1f} ms, "
                f"{self.one_device_s / self.predicted_s:.2f}x)")
        tail = ", ".join(f"{k} {v * 1e3:.2f} ms" for k, v in self.parts.items())
        return "\n".join([head, *self.lines, f"  {tail}"])


def _area(box: tuple[tuple[int, int], tuple[int, int]]) -> int:
    return width(box[0]) * width(box[1])


def _group_cost(profile: Profile, link: Link, grid: tuple[int, int], first: int, last: int,
                size: tuple[int, int]) -> tuple[float, float, float]:
    """(compute, input exchange, redundancy) of one group; raises ValueError if it cannot be tiled."""
    plan: GroupPlan = plan_front(list(profile.windows[first:last + 1]), size, grid, [(0, last - first)])[0]
    ranks = grid[0] * grid[1]
    spp = profile.seconds_per_pixel[first:last + 1]
    work = [sum(t * _area(plan.box("need", r, j + 1)) for j, t in enumerate(spp)) for r in range(ranks)]
    full = sum(t * _area(((0, plan.rows.sizes[j + 1] - 1), (0, plan.cols.sizes[j + 1] - 1)))
               for j, t in enumerate(spp))
    exchange = 0.0
    if first > 0:
        channels = profile.channels[first - 1]
        rows_t, cols_t = split(size[0], grid[0]), split(size[1], grid[1])
        tiles = [(rows_t[r // grid[1]], cols_t[r % grid[1]]) for r in range(ranks)]
        busiest = 0.0
        for r in range(ranks):
            need = plan.box("need", r, 0)
            pieces = [p for p in (intersect(tiles[q], need) for q in range(ranks) if q != r) if p]
            bytes_in = sum(_area(p) for p in pieces) * channels * profile.batch * profile.itemsize
            busiest = max(busiest, link.latency_s * len(pieces) + bytes_in / link.up_bytes_per_s)
        exchange = 2 * busiest
    return max(work), exchange, sum(work) / full if full else 1.0


def predict(profile: Profile, link: Link, grid: tuple[int, int], groups: list[tuple[int, int]]) -> Plan:
    """The modelled step time of a given grouping."""
    sizes = profile.sizes()
    ranks = grid[0] * grid[1]
    lines, compute, exchange = [], 0.0, 0.0
    for first, last in groups:
        c, e, redundancy = _group_cost(profile, link, grid, first, last, sizes[first])
        compute, exchange = compute + c, exchange + e
        lines.append(f"  group [{first}, {last}]: compute {c * 1e3:.2f} ms (work x{redundancy:.2f}), "
                     f"exchange in {e * 1e3:.2f} ms")
    h, w = sizes[-1]
    out_bytes = profile.batch * profile.channels[-1] * h * w * profile.itemsize
    parts = {
        "compute": compute,
        "exchange": exchange,
        "gather": (ranks - 1) * link.latency_s + out_bytes * (ranks - 1) / ranks / link.up_bytes_per_s,
        "norm_sync": 2 * sum(profile.norms) * math.ceil(math.log2(ranks)) * link.latency_s,
        "allreduce": 2 * (ranks - 1) * (link.latency_s + profile.front_params * profile.itemsize / ranks
                                        / link.up_bytes_per_s),
        "tail": profile.tail_s,
    }
    one = sum(t * a * b for t, (a, b) in zip(profile.seconds_per_pixel, sizes[1:])) + profile.tail_s
    return Plan([(first, last) for first, last in groups], grid, link, sum(parts.values()), one, parts, lines)


def plan_groups(profile: Profile, link: Link, grid: tuple[int, int]) -> Plan:
    """The grouping of least predicted step time, by dynamic programming over cut points."""
    sizes = profile.sizes()
    n = len(profile.windows)
    starts = [s for s in range(n) if s == 0 or profile.cuttable[s]]
    best: dict[int, tuple[float, list[tuple[int, int]]]] = {-1: (0.0, [])}
    for last in range(n):
        if last + 1 < n and not profile.cuttable[last + 1]:
            continue
        for first in (s for s in starts if s <= last and s - 1 in best):
            try:
                c, e, _ = _group_cost(profile, link, grid, first, last, sizes[first])
            except ValueError:
                continue
            cost = best[first - 1][0] + c + e
            if last not in best or cost < best[last][0]:
                best[last] = cost, best[first - 1][1] + [(first, last)]
    if n - 1 not in best:
        raise ValueError(f"parallel.grid: no grouping of the {n} layers fits a {grid[0]}x{grid[1]} grid "
                         f"at {profile.input_size[0]}x{profile.input_size[1]} px")
    return predict(profile, link, grid, best[n - 1][1])


def _fwd_bwd_seconds(module: nn.Module, x: torch.Tensor, repeats: int) -> float:
    """Median forward+backward seconds of one module on one input."""
    times = []
    for _ in range(repeats + 1):
        xi = x.detach().requires_grad_()
        start = time.perf_counter()
        out = module(xi)
        out.backward(torch.ones_like(out))
        times.append(time.perf_counter() - start)
    module.zero_grad(set_to_none=True)
    return float(np.median(times[1:]))


def measure_profile(front: nn.Sequential, tail: nn.Module, batch: int, in_channels: int,
                    input_size: tuple[int, int], comm: Comm | None = None, repeats: int = 3) -> Profile:
    """Time every front layer and the tail on this device (training mode, the model's dtype).

    With ``comm``, every rank measures and the mean is taken, so all ranks plan alike.
    """
    param = next(front.parameters())
    wins = [windows(m, i) for i, m in enumerate(front)]
    x = torch.randn(batch, in_channels, *input_size, dtype=param.dtype)
    spp, channels = [], []
    for m in front:
        with torch.no_grad():
            out = m(x)
        spp.append(_fwd_bwd_seconds(m, x, repeats) / (out.shape[-2] * out.shape[-1]))
        channels.append(out.shape[1])
        x = out
    times = np.array(spp + [_fwd_bwd_seconds(tail, x, repeats)])
    if comm is not None:
        times = comm.reduce_metrics(times) / comm.size
    return Profile(tuple(float(t) for t in times[:-1]), tuple(wins), tuple(channels),
                   tuple(isinstance(m, NORMS) for m in front), tuple(is_windowed(m) for m in front),
                   (input_size[0], input_size[1]), batch, param.element_size(),
                   sum(p.numel() for p in front.parameters() if p.requires_grad), float(times[-1]))


def measure_link(comm: Comm, nbytes: int = 1 << 22, repeats: int = 5) -> Link:
    """Latency and bandwidth of this group's links, from an 8-byte and an ``nbytes`` Alltoallv
    between neighbours (rank r sends to r + 1): what a halo exchange sees. The bandwidth counts
    the whole large transfer (latency included) so that noise cannot make it absurd. Set-up
    traffic, so the ledger is left as it was."""
    def seconds(n: int) -> float:
        counts = [0] * comm.size
        counts[(comm.rank + 1) % comm.size] = n
        recv_counts = [0] * comm.size
        recv_counts[(comm.rank - 1) % comm.size] = n
        send, recv = torch.zeros(n, dtype=torch.uint8), torch.empty(n, dtype=torch.uint8)
        times = []
        for _ in range(repeats):
            comm.barrier()
            start = time.perf_counter()
            comm.alltoallv_(send, counts, recv, recv_counts)
            times.append(time.perf_counter() - start)
        return float(comm.reduce_metrics([np.median(times)], op="max")[0])

    ledger = dataclasses.replace(comm.ledger)
    small, large = seconds(8), seconds(nbytes)
    comm.ledger = ledger
    return Link.symmetric(nbytes / large, small)
