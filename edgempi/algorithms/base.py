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


def participants(cfg: RunConfig, devices: int, round_index: int) -> np.ndarray | None:
    """Who is asked to report in a round: a seeded sample of devices (``algorithm.participation``),
    less the seeded dropouts (``algorithm.dropout``); None when everyone is. (Stragglers that miss
    ``network.deadline_s`` are dropped by the exchange itself, :meth:`Comm.allreduce_mean_`.)

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
    :meth:`after_backward` has combined them. ``sync_columns``: what a sync record holds
    besides its step (for /syncs).
    """

    models_differ = False
    exchanges_gradients = False  # True: every device's gradient is exchanged before its optimizer step
    sync_columns: tuple[str, ...] = ()

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    def after_backward(self, step: int) -> bool:
        """Between backward and the optimizer step: the place to exchange gradients. Returns
        False when there is nothing to step with (no device reported)."""
        return True

    def after_step(self, step: int) -> dict[str, Any] | None:
        """After the optimizer step: the place to exchange weights; returns a sync record."""
        return None

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint must keep of this policy (reference models, memories)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`; stateless policies have nothing to restore."""
