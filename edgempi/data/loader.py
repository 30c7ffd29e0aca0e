"""Batches of one device's shard, drawn in a seeded order from in-memory tensors.

No DataLoader workers: an index-gather from a tensor is far cheaper than the model step,
and a per-device torch.Generator makes the order reproducible and rank-independent.
"""
from __future__ import annotations

from typing import Iterator

import torch


class DeviceLoader:
    """Endless epochs over a shard; drops the last incomplete batch so all devices step alike."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, batch_size: int, seed: int,
                 mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        if len(x) < batch_size:
            raise ValueError(f"train.batch_size: a device holds {len(x)} samples, fewer than one batch "
                             f"of {batch_size}")
        self.x, self.y, self.batch_size = x, y, batch_size
        self.gen = torch.Generator().manual_seed(seed)
        self.scale = (1.0 / 255) / torch.tensor(std).view(1, -1, 1, 1)
        self.shift = -torch.tensor(mean).view(1, -1, 1, 1) / torch.tensor(std).view(1, -1, 1, 1)

    @property
    def steps_per_epoch(self) -> int:
        return len(self.x) // self.batch_size

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return torch.addcmul(self.shift, x.float(), self.scale)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        b = self.batch_size
        while True:
            order = torch.randperm(len(self.x), generator=self.gen)
            for i in range(self.steps_per_epoch):
                idx = order[i * b:(i + 1) * b]
                yield self.normalize(self.x[idx]), self.y[idx]


class ConcatLoader:
    """Several devices' batches joined into one: the centralized twin of a data-parallel run."""

    def __init__(self, loaders: list[DeviceLoader]) -> None:
        self.loaders = loaders
        self.steps_per_epoch = min(l.steps_per_epoch for l in loaders)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for batches in zip(*self.loaders):
            yield torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches])
