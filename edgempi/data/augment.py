"""Training-time augmentation on whole batches.

The loader draws batches from in-memory tensors, so augmentation runs on a batch [N, C, H, W] at
once: two gathers (rows, then columns) build every sample's crop and flip, with no Python loop over samples, and the
random draws come from the device's own torch.Generator so runs repeat exactly.
"""
from __future__ import annotations

from edgempi.util.lazy import torch


def crop_flip(x: torch.Tensor, generator: torch.Generator, padding: int = 4, flip: bool = True) -> torch.Tensor:
    """The standard CIFAR-10 augmentation: a random H×W crop of the zero-padded image, then a
    horizontal flip with probability ½, independently per sample.

    Works on uint8 or float batches and keeps the dtype. Draws, in order: row offsets, column
    offsets, flips — all N at once from ``generator``.
    """
    if x.dim() != 4:
        raise ValueError(f"crop_flip: expects a batch [N, C, H, W], got shape {tuple(x.shape)}")
    n, c, h, w = x.shape
    padded = torch.nn.functional.pad(x, (padding, padding, padding, padding))
    dy = torch.randint(0, 2 * padding + 1, (n, 1), generator=generator)
    dx = torch.randint(0, 2 * padding + 1, (n, 1), generator=generator)
    cols = torch.arange(w).expand(n, w)
    if flip:
        mirrored = torch.randint(0, 2, (n, 1), generator=generator).bool()
        cols = torch.where(mirrored, w - 1 - cols, cols)
    rows = (dy + torch.arange(h)).view(n, 1, h, 1).expand(n, c, h, w + 2 * padding)
    cols = (dx + cols).view(n, 1, 1, w).expand(n, c, h, w)
    return padded.gather(2, rows).gather(3, cols)
