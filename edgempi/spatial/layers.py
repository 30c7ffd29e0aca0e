"""The layers a partitioned front may hold, and how each runs on one tile's region.

Windowed layers (conv, pooling) run with their padding removed: the tile plan pads explicitly,
and only at true map borders. Normalisation layers in training mode take their statistics
over the positions each rank owns, summed across the group in one reduction per layer, so the
result equals the unpartitioned layer; in eval mode BatchNorm is pointwise and needs nothing.
"""
from __future__ import annotations

from dataclasses import dataclass

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


class _Allreduce(torch.autograd.Function):
    """Sum over the group; its gradient is the sum of every rank's gradient (as SyncBatchNorm)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, comm: Comm) -> torch.Tensor:  # type: ignore[override]
        ctx.comm = comm
        out = x.detach().clone()
        comm.allreduce_sum_(out, is_round=False)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # type: ignore[override]
        out = grad.contiguous().clone()
        ctx.comm.allreduce_sum_(out, is_round=False)
        return out, None


@dataclass(frozen=True)
class Step:
    """One layer on one rank: the slice it reads, the border padding, and (for norms) the
    owned slice and the number of positions of the whole map."""

    module: nn.Module
    take: tuple[slice, slice]
    pad: tuple[int, int, int, int]
    own: tuple[slice, slice]
    positions: int

    def __call__(self, x: torch.Tensor, comm: Comm) -> torch.Tensor:
        m = self.module
        if isinstance(m, NORMS):
            return self._norm(x, comm)
        x = x[..., self.take[0], self.take[1]]
        if any(self.pad):
            x = F.pad(x, self.pad, value=float("-inf") if isinstance(m, nn.MaxPool2d) else 0.0)
        if isinstance(m, nn.Conv2d):
            return F.conv2d(x, m.weight, m.bias, m.stride, 0, m.dilation, m.groups)
        if isinstance(m, nn.MaxPool2d):
            return F.max_pool2d(x, m.kernel_size, m.stride, 0, m.dilation)
        if isinstance(m, nn.AvgPool2d):
            return F.avg_pool2d(x, m.kernel_size, m.stride, 0, divisor_override=m.divisor_override)
        return m(x)

    def _norm(self, x: torch.Tensor, comm: Comm) -> torch.Tensor:
        """Batch/group statistics over owned positions, one reduction (sum and sum of squares)."""
        m = self.module
        b, c, h, w = x.shape
        if isinstance(m, nn.BatchNorm2d):
            if not (m.training or m.running_mean is None):
                return m(x)
            shape, dims, count = (1, c, 1, 1), (0, 2, 3), b * self.positions
            xs = x
        else:
            shape, dims, count = (b, m.num_groups, 1, 1, 1), (2, 3, 4), c // m.num_groups * self.positions
            xs = x.reshape(b, m.num_groups, c // m.num_groups, h, w)
        owned = xs[..., self.own[0], self.own[1]]
        sums = _Allreduce.apply(torch.cat([owned.sum(dims), (owned * owned).sum(dims)]), comm)
        mean, square = (sums / count).chunk(2)
        var = square - mean * mean
        y = ((xs - mean.view(shape)) * torch.rsqrt(var.view(shape) + m.eps)).reshape(b, c, h, w)
        if isinstance(m, nn.BatchNorm2d) and m.training and m.track_running_stats:
            _update_running(m, mean.detach(), var.detach() * count / max(count - 1, 1))
        if m.affine:
            y = y * m.weight.view(1, c, 1, 1) + m.bias.view(1, c, 1, 1)
        return y


def _update_running(m: nn.BatchNorm2d, mean: torch.Tensor, unbiased_var: torch.Tensor) -> None:
    """The running-statistics update of ``nn.BatchNorm2d`` in training mode."""
    with torch.no_grad():
        m.num_batches_tracked.add_(1)
        factor = 1.0 / float(m.num_batches_tracked) if m.momentum is None else m.momentum
        m.running_mean.lerp_(mean, factor)
        m.running_var.lerp_(unbiased_var, factor)
