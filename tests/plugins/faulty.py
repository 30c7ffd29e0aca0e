"""Plug-in models that misbehave, for tests/test_faults.py: one whose forward never returns on
one rank (user code hung, not MPI), and one whose evaluation gives NaN while training is fine."""
from __future__ import annotations

import os
import time

from torch import Tensor, nn

from edgempi import models


class HangsOnRank(nn.Module):
    """LeNet-5 whose forward sleeps for ever on rank ``EDGEMPI_TEST_HANG_RANK`` (default 1)
    from its ``EDGEMPI_TEST_HANG_AFTER``-th call on (default 30)."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner, self.calls = inner, 0
        self.hangs = os.environ.get("PMI_RANK") == os.environ.get("EDGEMPI_TEST_HANG_RANK", "1")
        self.after = int(os.environ.get("EDGEMPI_TEST_HANG_AFTER", "30"))

    def forward(self, x: Tensor) -> Tensor:
        self.calls += 1
        while self.hangs and self.calls >= self.after:
            time.sleep(60)
        return self.inner(x)


class NanWhenEvaluated(nn.Module):
    """LeNet-5 that trains normally and answers NaN in eval mode."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: Tensor) -> Tensor:
        out = self.inner(x)
        return out if self.training else out * float("nan")


def hangs(num_classes: int, in_channels: int, input_size: int, norm: str | None = None) -> nn.Module:
    return HangsOnRank(models.create("lenet5", num_classes, in_channels, input_size, norm))


def nan_eval(num_classes: int, in_channels: int, input_size: int, norm: str | None = None) -> nn.Module:
    return NanWhenEvaluated(models.create("lenet5", num_classes, in_channels, input_size, norm))
