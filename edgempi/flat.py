"""A model's trainable parameters and their gradients as views into two contiguous buffers.

With every parameter a view into one fp32 tensor, a weight or gradient exchange is a single
collective, and the optimizer steps one tensor instead of looping over parameters.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from edgempi.util.lazy import torch

if TYPE_CHECKING:
    from torch import nn


def _flatten_into(tensors: Sequence[torch.Tensor], buf: torch.Tensor) -> list[torch.Tensor]:
    views, offset = [], 0
    for t in tensors:
        n = t.numel()
        view = buf[offset:offset + n].view_as(t)
        view.copy_(t.detach())
        views.append(view)
        offset += n
    return views


class FlatModel:
    """Binds a module's parameters (and float buffers) to contiguous storage.

    ``params`` is a leaf tensor whose ``.grad`` is ``grads``: pass ``[flat.params]`` to a
    torch optimizer. ``buffers`` holds the float buffers (BatchNorm running statistics);
    integer buffers such as ``num_batches_tracked`` stay where they are.
    """

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        trainable = [p for p in model.parameters() if p.requires_grad]
        if not trainable:
            raise ValueError("the model has no trainable parameters")
        owners = [(m, name) for m in model.modules() for name, b in m.named_buffers(recurse=False)
                  if b is not None and b.is_floating_point()]
        float_buffers = [getattr(m, name) for m, name in owners]
        numel = sum(p.numel() for p in trainable)
        # Parameters and float buffers share one storage, so "weights with BN statistics"
        # is a zero-copy view as well.
        self.storage = torch.zeros(numel + sum(b.numel() for b in float_buffers), dtype=torch.float32)
        self.params = self.storage[:numel]
        self.buffers = self.storage[numel:]
        self.grads = torch.zeros(numel, dtype=torch.float32)
        for p, view in zip(trainable, _flatten_into(trainable, self.params)):
            p.data = view
        for p, view in zip(trainable, _flatten_into([torch.zeros_like(p) for p in trainable], self.grads)):
            p.grad = view
        self.params.grad = self.grads
        self.shapes = [tuple(p.shape) for p in trainable]
        self.buffer_shapes = [tuple(b.shape) for b in float_buffers]
        for (m, name), view in zip(owners, _flatten_into(float_buffers, self.buffers)):
            setattr(m, name, view)

    @property
    def numel(self) -> int:
        return self.params.numel()

    def zero_grad(self) -> None:
        self.grads.zero_()

    def exchanged(self, include_buffers: bool) -> torch.Tensor:
        """The contiguous view a weight exchange sends: parameters, optionally with float buffers."""
        return self.storage if include_buffers else self.params
