"""BatchNorm whose batch statistics span all devices (Large Batch with ``sync_bn: true``).

With per-device statistics, Large Batch on K devices of batch b is not SGD on batch K·b: each
device normalises over its own b samples, the weak point of small local batches. Here the
per-channel sums and squares are summed over devices in forward, and the two per-channel
gradient sums in backward, so the result equals BatchNorm over the global batch.
The sums go through the comm layer, which counts their bytes.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from edgempi.comm import Comm


def _summed(comm: Comm, local: torch.Tensor) -> torch.Tensor:
    """Per-channel sums over all devices; counted as bytes, not as a model round."""
    comm.allreduce_sum_(local, rounds=0)
    return local


class _SyncBatchNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, module: SyncBatchNorm
                ) -> torch.Tensor:
        dims = [0, *range(2, x.dim())]
        channels = x.shape[1]
        local = torch.cat([x.sum(dims), (x * x).sum(dims), x.new_tensor([x.numel() / channels])])
        total = _summed(module.comm, local)
        count = total[-1]
        mean = total[:channels] / count
        var = (total[channels:2 * channels] / count - mean * mean).clamp_min(0)
        invstd = torch.rsqrt(var + module.eps)
        shape = [1, channels] + [1] * (x.dim() - 2)
        xhat = (x - mean.view(shape)) * invstd.view(shape)
        with torch.no_grad():
            m = module.momentum
            module.running_mean.mul_(1 - m).add_(mean, alpha=m)
            module.running_var.mul_(1 - m).add_(var * count / max(float(count) - 1, 1.0), alpha=m)
            module.num_batches_tracked.add_(1)
        ctx.save_for_backward(xhat, invstd, weight)
        ctx.module, ctx.count, ctx.dims = module, count, dims
        return xhat * weight.view(shape) + bias.view(shape)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        xhat, invstd, weight = ctx.saved_tensors
        dims, channels = ctx.dims, xhat.shape[1]
        shape = [1, channels] + [1] * (xhat.dim() - 2)
        sum_dy, sum_dy_xhat = grad.sum(dims), (grad * xhat).sum(dims)
        total = _summed(ctx.module.comm, torch.cat([sum_dy, sum_dy_xhat]))
        mean_dy, mean_dy_xhat = total[:channels] / ctx.count, total[channels:] / ctx.count
        grad_x = (weight * invstd).view(shape) * (grad - mean_dy.view(shape) - xhat * mean_dy_xhat.view(shape))
        return grad_x, sum_dy_xhat, sum_dy, None


class SyncBatchNorm(nn.BatchNorm2d):
    """BatchNorm2d with statistics over every device's batch in training; plain in eval."""

    # Always kept here (running statistics tracked, a momentum), where BatchNorm2d may have none.
    running_mean: torch.Tensor
    running_var: torch.Tensor
    num_batches_tracked: torch.Tensor
    momentum: float

    def __init__(self, num_features: int, comm: Comm, eps: float = 1e-5, momentum: float = 0.1) -> None:
        super().__init__(num_features, eps=eps, momentum=momentum)
        self.comm = comm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return super().forward(x)
        return _SyncBatchNorm.apply(x, self.weight, self.bias, self)


def convert_sync_bn(model: nn.Module, comm: Comm) -> nn.Module:
    """Replace every BatchNorm2d of ``model`` by a SyncBatchNorm with the same state."""
    for name, child in model.named_children():
        if isinstance(child, nn.BatchNorm2d) and not isinstance(child, SyncBatchNorm):
            sync = SyncBatchNorm(child.num_features, comm, child.eps, child.momentum or 0.1)
            sync.load_state_dict(child.state_dict())
            setattr(model, name, sync)
        else:
            convert_sync_bn(child, comm)
    return model
