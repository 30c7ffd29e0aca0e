"""Small fronts shared by the spatial tests: odd sizes, stride-2 convs, pooling with padding,
a non-square kernel, a 1×1 stride-2 conv after a norm (positions nobody downstream reads)."""
from __future__ import annotations

from torch import nn

SIZE = (45, 41)


def mixed_front(norm: str = "batch") -> nn.Sequential:
    def n(c: int) -> nn.Module:
        return nn.BatchNorm2d(c) if norm == "batch" else nn.GroupNorm(2, c)

    return nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1), n(4), nn.ReLU(), nn.MaxPool2d(3, stride=2, padding=1),
        nn.Conv2d(4, 6, 3, stride=2, padding=1), n(6), nn.LeakyReLU(0.1),
        nn.Conv2d(6, 6, (5, 3), padding=(2, 1)), nn.AvgPool2d(2), n(6),
        nn.Conv2d(6, 4, 1, stride=2), nn.ReLU())


def tail(size: tuple[int, int] = (3, 3), channels: int = 4, classes: int = 5) -> nn.Sequential:
    """Position-sensitive (flatten + linear), so a misplaced tile cannot go unnoticed."""
    return nn.Sequential(nn.Flatten(), nn.Linear(channels * size[0] * size[1], classes))


GROUPINGS = {
    "fused": [(0, 11)],
    "three": [(0, 3), (4, 8), (9, 11)],
    "per_layer": [(i, i) for i in range(12)],
}
