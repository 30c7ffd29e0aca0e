"""Batches of one device's shard, drawn in a seeded order from in-memory tensors.

No DataLoader workers: an index-gather from a tensor is far cheaper than the model step.
The batch of step t is a pure function of (device seed, t), so a resumed run draws exactly
the batches an uninterrupted one would, with no loader state to save.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Protocol

import numpy as np

from edgempi.data.augment import crop_flip
from edgempi.util.lazy import torch


def stream_seed(*keys: int) -> int:
    """A 63-bit seed for a torch.Generator from a tuple of integers (device seed, epoch, ...)."""
    return int(np.random.SeedSequence(list(keys)).generate_state(1, np.uint64)[0] >> np.uint64(1))


class Batches(Protocol):
    """What the loop asks of a device's data: a :class:`DeviceLoader`, or one whose shard and
    labels change under a drift schedule (``data.drift``)."""

    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The (normalised images, labels) this device trains on at ``step``."""

    def relabel(self, y: torch.Tensor, step: int) -> torch.Tensor:
        """Test labels as this device sees them at ``step``."""

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """Raw images as this device's batches hold them."""


class DeviceLoader:
    """Epochs over a shard in a fresh order each; the last incomplete batch is dropped."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, batch_size: int, seed: int,
                 mean: tuple[float, ...], std: tuple[float, ...], augment: bool = False) -> None:
        if len(x) < batch_size:
            raise ValueError(f"train.batch_size: a device holds {len(x)} samples, fewer than one batch "
                             f"of {batch_size}")
        self.x, self.y, self.batch_size, self.seed, self.augment = x, y, batch_size, seed, augment
        self.order = lru_cache(maxsize=2)(self._order)
        self.scale = (1.0 / 255) / torch.tensor(std).view(1, -1, 1, 1)
        self.shift = -torch.tensor(mean).view(1, -1, 1, 1) / torch.tensor(std).view(1, -1, 1, 1)

    @property
    def steps_per_epoch(self) -> int:
        return len(self.x) // self.batch_size

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return torch.addcmul(self.shift, x.float(), self.scale)

    def relabel(self, y: torch.Tensor, step: int) -> torch.Tensor:
        """Test labels as this device sees them at ``step``: as they are (cf. ``data.drift``)."""
        return y

    def _order(self, epoch: int) -> torch.Tensor:
        return torch.randperm(len(self.x), generator=torch.Generator().manual_seed(stream_seed(self.seed, epoch)))

    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The (normalised images, labels) this device trains on at ``step``."""
        epoch, i = divmod(step, self.steps_per_epoch)
        idx = self.order(epoch)[i * self.batch_size:(i + 1) * self.batch_size]
        # index_select, not x[idx]: the same rows without advanced indexing's overhead (13 µs against
        # 3 µs for 16 images, most of a batched device-step's data time: lenet_ceiling.py)
        x = self.x.index_select(0, idx)
        if self.augment:
            x = crop_flip(x, torch.Generator().manual_seed(stream_seed(self.seed, epoch, i, 1)))
        return self.normalize(x), self.y.index_select(0, idx)

