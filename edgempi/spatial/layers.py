"""The layers a partitioned front may hold, and how each runs on one tile's region.

Windowed layers (conv, pooling) run with their padding removed: the tile plan pads explicitly,
and only at true map borders. Normalisation layers in training mode take their statistics
over the positions each rank owns, summed across the group in one reduction per layer, so the
result equals the unpartitioned layer; in eval mode BatchNorm is pointwise and needs nothing.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from edgempi.comm import Comm
from edgempi.spatial.geometry import Window

POINTWISE = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.SiLU, nn.GELU, nn.Sigmoid, nn.Tanh,
             nn.Hardswish, nn.Mish, nn.Identity)
NORMS = (nn.BatchNorm2d, nn.GroupNorm)


def _pair(v: int | tuple[int, ...]) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


def windows(module: nn.Module, index: int) -> tuple[Window, Window]:
    """(row, column) windows of a layer; refuses layers whose tiles cannot be computed exactly."""
    name = f"parallel.layers: layer {index} ({type(module).__name__})"
    if isinstance(module, nn.Conv2d):
        if isinstance(module.padding, str) or module.padding_mode != "zeros":
            raise ValueError(f"{name} needs numeric zero padding")
        k, s, p, d = (_pair(v) for v in (module.kernel_size, module.stride, module.padding, module.dilation))
    elif isinstance(module, (nn.MaxPool2d, nn.AvgPool2d)):
        if module.ceil_mode or getattr(module, "return_indices", False):
            raise ValueError(f"{name} cannot use ceil_mode or return_indices")
        if isinstance(module, nn.AvgPool2d) and not module.count_include_pad and module.padding:
            raise ValueError(f"{name}: padding with count_include_pad=False is not supported")
        dilation = getattr(module, "dilation", 1)
        k, s, p, d = (_pair(v) for v in (module.kernel_size, module.stride, module.padding, dilation))
    elif isinstance(module, POINTWISE + NORMS):
        return Window(), Window()
    else:
        raise ValueError(f"{name} cannot be partitioned spatially (supported: Conv2d, MaxPool2d, "
                         f"AvgPool2d, BatchNorm2d, GroupNorm and pointwise activations)")
    return Window(k[0], s[0], p[0], d[0]), Window(k[1], s[1], p[1], d[1])


def is_windowed(module: nn.Module) -> bool:
    return isinstance(module, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d))


def _owned_stats(owned: torch.Tensor, dims: tuple[int, ...], count: int, eps: float,
                 comm: Comm) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mean, biased variance and 1/σ over every rank's owned positions: one reduction of
    (Σx, Σx²)."""
    sums = torch.cat([owned.sum(dims), (owned * owned).sum(dims)])
    comm.allreduce_sum_(sums, rounds=0)
    mean, square = (sums / count).chunk(2)
    var = square - mean * mean
    return mean, var, torch.rsqrt(var + eps)


class _OwnedNorm(torch.autograd.Function):
    """x̂ = (x − μ)/σ over a rank's region, with μ, σ² over the positions each rank owns
    (``dims`` are reduced: BatchNorm per channel, GroupNorm per sample and group).

    The SyncBatchNorm scheme with ownership: forward reduces (Σx, Σx²) over owned positions,
    backward (Σg, Σg·x̂) over each rank's region, one reduction each. Only x̂ and 1/σ are
    saved; composed from autograd ops it would keep three maps per layer instead of one.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, comm: Comm, own: tuple[slice, slice], dims: tuple[int, ...],
                count: int, eps: float):
        mean, var, invstd = _owned_stats(x[..., own[0], own[1]], dims, count, eps, comm)
        shape = _stat_shape(x, dims)
        xhat = (x - mean.view(shape)) * invstd.view(shape)
        ctx.save_for_backward(xhat, invstd)
        ctx.args = comm, own, dims, count
        ctx.mark_non_differentiable(mean, var)
        return xhat, mean, var

    @staticmethod
    def backward(ctx, grad: torch.Tensor, *_: torch.Tensor):
        xhat, invstd = ctx.saved_tensors
        comm, own, dims, count = ctx.args
        sums = torch.cat([grad.sum(dims), (grad * xhat).sum(dims)])
        comm.allreduce_sum_(sums, rounds=0)
        shape = _stat_shape(xhat, dims)
        total, dot = (v.view(shape) for v in sums.chunk(2))
        scale = invstd.view(shape)
        dx = grad * scale
        dx[..., own[0], own[1]] -= scale / count * (total + xhat[..., own[0], own[1]] * dot)
        return dx, None, None, None, None, None


def _stat_shape(x: torch.Tensor, dims: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(1 if d in dims else n for d, n in enumerate(x.shape))


@dataclass(frozen=True)
class Step:
    """One layer on one rank: the slice it reads, the border padding, and (for norms) the
    owned slice and the number of positions of the whole map.

    Padding equal on both sides of an axis is left to the layer itself (no padded copy to keep
    for backward); otherwise that axis is padded explicitly (``pad``: left, right, top, bottom).
    """

    module: nn.Module
    take: tuple[slice, slice]
    pad: tuple[int, int, int, int]
    own: tuple[slice, slice]
    positions: int
    padding: tuple[int, int] = (0, 0)

    @classmethod
    def at_borders(cls, module: nn.Module, take: tuple[slice, slice], rows: tuple[int, int],
                   cols: tuple[int, int], own: tuple[slice, slice], positions: int) -> Step:
        """A step padding ``rows`` (top, bottom) and ``cols`` (left, right) at true borders."""
        sym = [a == b for a, b in (rows, cols)]
        pad = (0, 0) if sym[1] else cols, (0, 0) if sym[0] else rows
        padding = rows[0] if sym[0] else 0, cols[0] if sym[1] else 0
        return cls(module, take, (*pad[0], *pad[1]), own, positions, padding)

    def __call__(self, x: torch.Tensor, comm: Comm) -> torch.Tensor:
        m = self.module
        if isinstance(m, NORMS):
            return self._norm(x, comm)
        x = x[..., self.take[0], self.take[1]]
        if any(self.pad):
            x = F.pad(x, self.pad, value=float("-inf") if isinstance(m, nn.MaxPool2d) else 0.0)
        if isinstance(m, nn.Conv2d):
            return F.conv2d(x, m.weight, m.bias, m.stride, self.padding, m.dilation, m.groups)
        if isinstance(m, nn.MaxPool2d):
            return F.max_pool2d(x, m.kernel_size, m.stride, self.padding, m.dilation)
        if isinstance(m, nn.AvgPool2d):
            return F.avg_pool2d(x, m.kernel_size, m.stride, self.padding, divisor_override=m.divisor_override)
        return m(x)

    def _norm(self, x: torch.Tensor, comm: Comm) -> torch.Tensor:
        """Batch/group statistics over owned positions, one reduction each way."""
        m = cast("nn.BatchNorm2d | nn.GroupNorm", self.module)  # what Step.at_borders makes a norm of
        b, c, h, w = x.shape
        if isinstance(m, nn.BatchNorm2d):
            if not (m.training or m.running_mean is None):
                return m(x)
            xs, dims, count = x, (0, 2, 3), b * self.positions
        else:
            xs = x.reshape(b, m.num_groups, c // m.num_groups, h, w)
            dims, count = (2, 3, 4), c // m.num_groups * self.positions
        xhat, mean, var = _OwnedNorm.apply(xs, comm, self.own, dims, count, m.eps)
        if isinstance(m, nn.BatchNorm2d) and m.training and m.track_running_stats:
            _update_running(m, mean, var * count / max(count - 1, 1))
        y = xhat.reshape(b, c, h, w)
        return y * m.weight.view(1, c, 1, 1) + m.bias.view(1, c, 1, 1) if m.affine else y


def _update_running(m: nn.BatchNorm2d, mean: torch.Tensor, unbiased_var: torch.Tensor) -> None:
    """The running-statistics update of ``nn.BatchNorm2d`` in training mode."""
    tracked, running_mean, running_var = m.num_batches_tracked, m.running_mean, m.running_var
    if tracked is None or running_mean is None or running_var is None:  # track_running_stats=False: none kept
        return
    with torch.no_grad():
        tracked.add_(1)
        factor = 1.0 / float(tracked) if m.momentum is None else m.momentum
        running_mean.lerp_(mean, factor)
        running_var.lerp_(unbiased_var, factor)
