"""What a training method is: a synchronisation rule with two hooks in the one loop."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from edgempi.comm import Comm
from edgempi.config import RunConfig
from edgempi.devices import DeviceBank
from edgempi.flat import FlatModel


@dataclass
class Context:
    """What every policy may use; built once by the loop.

    ``flat`` is the one model (the device training now); ``bank`` holds every device of this
    rank as a row, and is what a policy's exchanges read and write after the devices' steps."""

    cfg: RunConfig
    comm: Comm
    flat: FlatModel
    steps_per_epoch: int
    optimizer: torch.optim.Optimizer | None = None
    bank: DeviceBank = None  # type: ignore[assignment]  # default: the one device of ``flat``

    def __post_init__(self) -> None:
        if self.bank is None:
            self.bank = DeviceBank(self.flat, self.optimizer, 1, keep_grads=False)


def reporters(ctx: Context, round_index: int, up_bytes: int) -> np.ndarray | None:
    """Who reports in a round: the sampled, not dropped-out devices (:func:`participants`) that
    also deliver their ``up_bytes`` before the deadline (``network.deadline_s``); None: all."""
    mask = participants(ctx.cfg, ctx.comm.devices, round_index)
    on_time = ctx.comm.on_time(up_bytes)
    if on_time is None:
        return mask
    return on_time if mask is None else mask & on_time


def participants(cfg: RunConfig, devices: int, round_index: int) -> np.ndarray | None:
    """Who reports in a round: a seeded sample of devices (``algorithm.participation``), less the
    seeded dropouts (``algorithm.dropout``); None when everyone does.

    A function of (seed, round) only, so every rank draws the same mask without talking.
    """
    a = cfg.algorithm
    if a.participation == 1 and a.dropout == 0:
        return None
    rng = np.random.default_rng([cfg.seed, 0xFEDA, round_index])
    mask = np.zeros(devices, dtype=bool)
    mask[rng.choice(devices, size=max(1, round(a.participation * devices)), replace=False)] = True
    mask &= rng.random(devices) >= a.dropout
    return mask


class Policy:
    """Default: train locally and never exchange anything (the centralized baseline).

    ``models_differ``: devices may hold different models between syncs, so evaluation uses
    their average. ``exchanges_gradients``: the loop keeps every device's gradient until
    :meth:`after_backward` has combined them. ``sync_columns``: what a sync record holds besides its step (for /syncs).
    """

    models_differ = False
    exchanges_gradients = False  # True: every device's gradient is exchanged before its optimizer step
    sync_columns: tuple[str, ...] = ()

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    def after_backward(self, step: int) -> None:
        """Between backward and the optimizer step: the place to exchange gradients."""

    def after_step(self, step: int) -> dict[str, Any] | None:
        """After the optimizer step: the place to exchange weights; returns a sync record."""
        return None

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint must keep of this policy (reference models, memories)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`; stateless policies have nothing to restore."""
