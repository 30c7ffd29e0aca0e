"""A user's own data set, model, method and compressor in one module of their own, named in a
config by dotted paths (``data.name: my_plugins:stripes`` with this folder on PYTHONPATH).
Nothing in the edgempi package is edited or registered."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from edgempi.algorithms import Capabilities, Context, HeldModel, MethodSettings, Policy
from edgempi.compression import CompressionSettings, Compressor
from edgempi.data import Dataset, DataSettings, LoadOptions
from edgempi.settings import require


def stripes(opts: LoadOptions) -> Dataset:
    """Two classes of 1×16×16 images: horizontal or vertical stripes, with seeded noise."""
    gen = torch.Generator().manual_seed(opts.seed)

    def draw(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.randint(2, (n,), generator=gen)
        lines = (torch.arange(16) % 4 < 2).float() * 200
        images = torch.where(y.view(-1, 1, 1, 1) == 0, lines.view(1, 1, 16, 1), lines.view(1, 1, 1, 16))
        noise = torch.randn(n, 1, 16, 16, generator=gen) * 30
        return (images.expand(n, 1, 16, 16) + noise).clamp(0, 255).to(torch.uint8), y

    return Dataset("stripes", *draw(512), *draw(128), num_classes=2, mean=(0.4,), std=(0.4,))


def tiny_net(num_classes: int, in_channels: int, input_size: int, norm: str = "none") -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(in_channels * input_size ** 2, 16), nn.ReLU(),
                         nn.Linear(16, num_classes))


@dataclass
class PeriodicSettings(MethodSettings):
    every: int = 4  # local steps between two weight averages

    def check(self, cfg: Any) -> None:
        super().check(cfg)
        require(self.every > 0, "algorithm.every", "must be > 0")


class Periodic(Policy):
    """Average the weights every ``every`` steps: FedAvg in a dozen lines."""

    Settings = PeriodicSettings
    capabilities = Capabilities(models_differ=True, sync_columns=("participants",))

    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        self.held = HeldModel(ctx.bank, slice(0, ctx.flat.numel))  # the last average: what evaluations score

    def after_step(self, step: int) -> dict[str, Any] | None:
        if (step + 1) % self.settings.every:
            return None
        reported = self.ctx.average_(self.ctx.bank.params)
        if reported:
            self.held.capture()
        return {"step": step + 1, "participants": reported}


class Truncate16(Compressor):
    """bfloat16 by truncation: the upper 16 bits of each float32, 2 bytes per element."""

    Settings = CompressionSettings

    def compress(self, x: torch.Tensor, step: int = 0, epoch: float = 0.0) -> tuple[torch.Tensor, ...]:
        return ((x.view(torch.int32) >> 16).to(torch.int16),)

    def decompress_into(self, payload: Sequence[torch.Tensor], out: torch.Tensor) -> None:
        out.copy_((payload[0].to(torch.int32) << 16).view(torch.float32))


class Unheld(Periodic):
    """Periodic without a held model: it can only be scored on the devices' average."""

    def __init__(self, ctx: Context) -> None:
        Policy.__init__(self, ctx)

    def after_step(self, step: int) -> dict[str, Any] | None:
        if (step + 1) % self.settings.every:
            return None
        return {"step": step + 1, "participants": self.ctx.average_(self.ctx.bank.params)}


class Undeclared(Periodic):
    """A mistake: capabilities as a mapping, not a Capabilities."""

    capabilities = {"models_differ": True}  # type: ignore[assignment]


class FormerStyle(Periodic):
    """A mistake: a capability as an attribute of its own, as plug-ins declared them before Capabilities."""

    exchanges_gradients = True


@dataclass
class SizedSettings(DataSettings):
    side: int = 16
    """The side of the stripes' square images."""

    def input_shape(self) -> tuple[int, int]:
        return 1, self.side

    def check(self, cfg: Any) -> None:
        super().check(cfg)
        require(self.side >= 4, "data.side", "must be >= 4")


class Sized:
    """Stripes of a size the config chooses: a data set with keys of its own (``data.side``)."""

    Settings = SizedSettings

    def __call__(self, opts: LoadOptions[SizedSettings]) -> Dataset:
        ds = stripes(opts)
        side = opts.settings.side
        resize = torch.nn.functional.interpolate
        ds.train_x, ds.test_x = (resize(x.float(), size=(side, side)).to(torch.uint8) for x in (ds.train_x, ds.test_x))
        return ds


sized = Sized()
