"""Normalisation layers by name, so every model offers batch | group | none."""
from __future__ import annotations

from torch import nn


def norm2d(norm: str, channels: int) -> nn.Module:
    if norm == "batch":
        return nn.BatchNorm2d(channels)
    if norm == "group":
        return nn.GroupNorm(min(32, channels // 2) or 1, channels)
    if norm == "none":
        return nn.Identity()
    raise ValueError(f"unknown norm {norm!r} (choose from batch, group, none)")
