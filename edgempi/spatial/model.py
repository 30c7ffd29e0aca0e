"""Spatially partitioned training of a CNN's first layers across the ranks of one group.

Every rank calls ``forward`` on the same full batch and gets the unpartitioned output. Inside,
the front is cut into layer groups; each rank computes its output tile of a group through the
fused layers from the input region it needs, and tiles move at group boundaries by one
Alltoallv (only the parts each rank needs). After the last group the tiles are gathered on
every rank and the *tail runs replicated on every rank, on the full batch*: that costs the
tail's compute P times, but the tail's weight gradients are then equal everywhere without any
exchange, the output is the unpartitioned one, and the loss and its gradient are identical on
every rank. (The tail must therefore be deterministic, or its randomness seeded alike.)

Backward needs no extra step: the gather's gradient is each rank's *owned* slice of the
(identical) full gradient, each boundary sends input-gradient halos back to the owners and
adds them, and the weight gradients of the front are per-tile partial sums that
``allreduce_grads_`` adds up with one Allreduce over a flat buffer.
"""
from __future__ import annotations

import torch
from torch import nn

from edgempi.comm import Comm
from edgempi.spatial.geometry import Box, GroupPlan, Window, intersect, plan_front, width
from edgempi.spatial.layers import Step, windows

ORIGIN: Box = ((0, 0), (0, 0))


def _local(box: Box, inside: Box) -> tuple[slice, slice]:
    """Slices of ``box`` within a tensor that covers ``inside``."""
    (r0, r1), (c0, c1) = box
    return slice(r0 - inside[0][0], r1 - inside[0][0] + 1), slice(c0 - inside[1][0], c1 - inside[1][0] + 1)


def route(comm: Comm, x: torch.Tensor, have: list[Box], want: list[Box]) -> torch.Tensor:
    """Rank r holds region ``have[r]`` of a map and gets region ``want[r]`` back, built from
    every rank's overlap with it. Overlapping pieces are added: the forward pass routes
    disjoint tiles to overlapping regions, the backward pass adds halos back onto tiles.
    """
    me, size = comm.rank, comm.size
    b, c = x.shape[:2]
    sends = [intersect(have[me], want[q]) for q in range(size)]
    recvs = [intersect(have[r], want[me]) for r in range(size)]
    parts = [x[(...,) + _local(box, have[me])].reshape(-1) for box in sends if box]
    send = torch.cat(parts) if parts else x.new_empty(0)
    numel = [0 if box is None else b * c * width(box[0]) * width(box[1]) for box in recvs]
    recv = x.new_empty(sum(numel))
    comm.alltoallv_(send, [0 if box is None else b * c * width(box[0]) * width(box[1]) for box in sends],
                    recv, numel)
    out = x.new_zeros(b, c, width(want[me][0]), width(want[me][1]))
    for box, piece in zip(recvs, recv.split(numel)):
        if box:
            out[(...,) + _local(box, want[me])] += piece.view(b, c, width(box[0]), width(box[1]))
    return out


class _Exchange(torch.autograd.Function):
    """Tiles of one group's output → the regions the next group needs; backward adds halos."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, comm: Comm, tiles: list[Box], regions: list[Box]) -> torch.Tensor:
        ctx.args = comm, tiles, regions
        return route(comm, x.detach(), tiles, regions)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        comm, tiles, regions = ctx.args
        return route(comm, grad.contiguous(), regions, tiles), None, None, None


class _Gather(torch.autograd.Function):
    """All tiles → the full map on every rank; backward keeps the gradient of the owned tile."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, comm: Comm, tiles: list[Box]) -> torch.Tensor:
        ctx.args = comm, tiles
        b, c = x.shape[:2]
        numel = [b * c * width(r) * width(col) for r, col in tiles]
        recv = x.new_empty(sum(numel))
        comm.allgatherv_(x.detach().contiguous().reshape(-1), recv, numel)
        full = x.new_empty(b, c, tiles[-1][0][1] + 1, tiles[-1][1][1] + 1)
        for box, piece in zip(tiles, recv.split(numel)):
            full[(...,) + _local(box, ORIGIN)] = piece.view(b, c, width(box[0]), width(box[1]))
        return full

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        comm, tiles = ctx.args
        return grad[(...,) + _local(tiles[comm.rank], ORIGIN)], None, None


class _SumGrad(torch.autograd.Function):
    """Identity whose gradient is summed over the group: overlap-adds input-gradient halos."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, comm: Comm) -> torch.Tensor:
        ctx.comm = comm
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        out = grad.contiguous().clone()
        ctx.comm.allreduce_sum_(out, rounds=0)
        return out, None


def spatial_groups(world: Comm, grid: tuple[int, int], share_ledger: bool = False) -> tuple[Comm, Comm]:
    """Spatial groups combined with data parallelism across them.

    Returns (group, peers): ranks ``k·P … k·P + P − 1`` form spatial group k (they feed the same
    batch), and the ranks holding the same tile in every group form the peers, which average
    the whole gradient like ``large_batch`` after ``allreduce_grads_`` summed it in the group.
    BatchNorm statistics then cover one group's batch, as in data-parallel training.
    """
    ranks = int(grid[0]) * int(grid[1])
    if ranks < 1 or world.size % ranks:
        raise ValueError(f"parallel.grid: {list(grid)} needs a multiple of {ranks} ranks, the job has {world.size}")
    return (world.split(world.rank // ranks, share_ledger=share_ledger),
            world.split(world.rank % ranks, share_ledger=share_ledger))


class SpatialModel(nn.Module):
    """``tail(front(x))`` with ``front``'s layers partitioned over an R×C grid of ``comm``'s ranks.

    ``groups`` are inclusive [first, last] layer ranges of ``front`` (see ``plan_groups`` for
    choosing them). ``input_size`` (H, W) is checked at construction so a bad grid fails on
    every rank before any collective; other sizes are planned when first seen.
    """

    def __init__(self, front: nn.Sequential, tail: nn.Module, comm: Comm, grid: tuple[int, int],
                 groups: list[tuple[int, int]], input_size: tuple[int, int]) -> None:
        super().__init__()
        grid = (int(grid[0]), int(grid[1]))
        if min(grid) < 1 or grid[0] * grid[1] != comm.size:
            raise ValueError(f"parallel.grid: {list(grid)} needs {grid[0] * grid[1]} ranks per group, "
                             f"the group has {comm.size}")
        self.front, self.tail, self.comm, self.grid = front, tail, comm, grid
        self.windows: list[tuple[Window, Window]] = [windows(m, i) for i, m in enumerate(front)]
        self.groups = [(first, last) for first, last in groups]
        self._plans: dict[tuple[int, int], tuple[list[GroupPlan], list[list[Step]]]] = {}
        self.plan((input_size[0], input_size[1]))

    @property
    def front_numel(self) -> int:
        """Trainable front parameters: the leading part of a ``FlatModel`` of this module."""
        return sum(p.numel() for p in self.front.parameters() if p.requires_grad)

    def plan(self, size: tuple[int, int]) -> list[GroupPlan]:
        """The tile plan for an input of ``size`` (H, W)."""
        if size not in self._plans:
            plans = plan_front(self.windows, size, self.grid, self.groups)
            self._plans[size] = plans, [self._steps(p) for p in plans]
        return self._plans[size][0]

    def _steps(self, plan: GroupPlan) -> list[Step]:
        me = self.comm.rank
        i, c = plan.index(me)
        rows, cols = plan.rows, plan.cols
        out = []
        for j in range(plan.last - plan.first + 1):
            (r0, r1), (c0, c1) = rows.take[i][j], cols.take[c][j]
            out.append(Step.at_borders(self.front[plan.first + j], (slice(r0, r1 + 1), slice(c0, c1 + 1)),
                                       rows.pads[i][j], cols.pads[c][j],
                                       _local(plan.box("own", me, j), plan.box("need", me, j)),
                                       rows.sizes[j] * cols.sizes[j]))
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = (x.shape[-2], x.shape[-1])
        plans = self.plan(size)
        steps = self._plans[size][1]
        me = self.comm.rank
        if x.requires_grad and torch.is_grad_enabled() and self.comm.size > 1:
            x = _SumGrad.apply(x, self.comm)
        x = x[(...,) + _local(plans[0].box("need", me, 0), ORIGIN)]
        for g, (plan, group_steps) in enumerate(zip(plans, steps)):
            if g:
                x = _Exchange.apply(x, self.comm, plans[g - 1].boxes("own", -1), plan.boxes("need", 0))
            for step in group_steps:
                x = step(x, self.comm)
        return self.tail(_Gather.apply(x, self.comm, plans[-1].boxes("own", -1)))

    def allreduce_grads_(self, flat_grads: torch.Tensor | None = None) -> None:
        """Sum the front's per-tile weight gradients over the group: one Allreduce.

        Pass ``FlatModel(self).grads`` to reduce its leading ``front_numel`` entries in place;
        without it the front's gradients are packed into one buffer and unpacked after.
        """
        if flat_grads is not None:
            self.comm.allreduce_sum_(flat_grads[:self.front_numel])
            return
        trainable = [p for p in self.front.parameters() if p.requires_grad]
        grads = [p.grad for p in trainable if p.grad is not None]
        if len(grads) < len(trainable):
            raise ValueError("allreduce_grads_: run backward before reducing the front's gradients")
        flat = torch.cat([g.reshape(-1) for g in grads])
        self.comm.allreduce_sum_(flat)
        torch._foreach_copy_(grads, [v.view_as(g) for v, g in zip(flat.split([g.numel() for g in grads]), grads)])
