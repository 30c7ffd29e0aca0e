"""Dynamic averaging (Kamp et al., ECML-PKDD 2018): sync only when some device drifted too far.

Every ``check_every`` local steps each device tests its local condition ‖w − r‖² > Δ against the
reference r (the average at the last full sync). One 4-byte control collective carries the
violations; if any device violated, all average their weights. Since every device that did not
violate has ‖w − r‖² ≤ Δ, and the mean minimises the squared distances, no sync means the
divergence (1/m)Σ‖wᵢ − w̄‖² ≤ (1/m)Σ‖wᵢ − r‖² ≤ Δ.

With ``algorithm.balancing`` (the paper's balancing, as in the authors' platform code) the
coordinator first averages only the violators B; if ‖avg_B − r‖² ≤ Δ, B adopts avg_B and r
stays, so every local condition holds again and the bound above with it. Otherwise it adds
2·|B| random devices and tries again; a set grown to m/2 devices or more becomes a full sync
(r moves), as does a check that every device violated. Each device uploads its model at most
once per balancing and only B downloads.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from edgempi.algorithms.base import Capabilities, Context
from edgempi.algorithms.model_drift import DriftPolicy
from edgempi.algorithms.server import ServerSettings
from edgempi.config import RunConfig
from edgempi.registry import METHODS
from edgempi.settings import exclusive, require
from edgempi.util.lazy import torch

if TYPE_CHECKING:
    from edgempi.comm import Comm



@dataclass
class DynamicSettings(ServerSettings):
    """Every ``check_every`` steps, test ‖w − r‖² > ``delta``; ``balancing``: the paper's variant."""

    check_every: int = 1
    """Steps between the devices' divergence tests."""
    delta: float | None = None
    """The divergence threshold Δ on ‖w − r‖² (required; 0 is FedAvg with ``local_steps = check_every``)."""
    balancing: bool = exclusive(False, "is dynamic averaging's (Kamp et al.)")
    """The paper's balancing: average the violators (and random companions) first, a full sync only if needed."""

    def check(self, cfg: RunConfig) -> None:
        super().check(cfg)
        require(self.delta is not None, "algorithm.delta",
                "dynamic needs the divergence threshold algorithm.delta (e.g. 1.0 for LeNet-5)")
        require(self.delta is None or self.delta >= 0, "algorithm.delta", "must be >= 0")
        require(self.check_every > 0, "algorithm.check_every", "must be > 0")
        require(not self.balancing or (self.everyone_reports and cfg.network.deadline_s is None),
                "algorithm.balancing", "is not combined with partial participation, dropouts or deadlines")
        require(not self.balancing or self.server_optimizer == "none", "algorithm.server_optimizer",
                "a server step follows full syncs only: not combined with algorithm.balancing")


@METHODS.register("dynamic")
class Dynamic(DriftPolicy):
    paper = ("Kamp et al., Efficient Decentralized Deep Learning by Dynamic Model Averaging, "
             "ECML-PKDD 2018, arXiv:1807.03210")
    Settings = DynamicSettings
    settings: DynamicSettings
    # averaged: the balancing set's size (NaN: no balancing)
    capabilities = Capabilities(models_differ=True, sync_columns=("violators", "averaged"))

    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        self.check_every = self.settings.check_every
        assert self.settings.delta is not None, "the config requires algorithm.delta of dynamic"
        self.delta: float = self.settings.delta
        self.balancing = self.settings.balancing

    def after_step(self, step: int) -> dict[str, Any] | None:
        if (step + 1) % self.check_every:
            return None
        violated = [[float(torch.dot(delta, delta)) > self.delta] for delta in self.drifts()]
        if self.balancing:
            flags = self.ctx.comm.control(violated, "gather")[:, 0] > 0
            return self.balance(step + 1, flags) if flags.any() else None
        (violators,) = self.ctx.comm.control(violated)
        if violators == 0 or self.sync() is None:
            return None
        return {"step": step + 1, "violators": int(violators)}

    def balance(self, step: int, violators: np.ndarray) -> dict[str, Any]:
        """Average ever larger sets of devices, starting from the violators, until the set's
        average lies within Δ of r; a set grown to half of the devices becomes all of them."""
        comm, rows = self.ctx.comm, self.ctx.bank.exchanged(self.settings.average_buffers)
        members, uploaded = violators.copy(), np.zeros_like(violators)
        full = bool(members.all())
        rng = np.random.default_rng([self.ctx.cfg.seed, 0xBA1A, step])  # the same draw on every rank
        while True:
            mean = average_members(comm, rows, members, uploaded)
            uploaded |= members
            if full or self.within_delta(mean):
                break
            others = np.flatnonzero(~members)
            members[rng.choice(others, size=min(len(others), 2 * int(members.sum())), replace=False)] = True
            if 2 * int(members.sum()) >= comm.devices:
                members[:], full = True, True
        adopt_(comm, rows, mean, members)
        if full:
            self.rounds += 1
            self.w0.copy_(mean[:self.w0.numel()])
            self.held.capture()
        return {"step": step, "violators": int(violators.sum()), "averaged": int(members.sum())}

    def within_delta(self, mean: torch.Tensor) -> bool:
        """‖mean − r‖² ≤ Δ, agreed by all ranks: each holds the same mean only up to the
        Allreduce's rounding, so they take the largest distance (uncounted: the coordinator
        computes it alone)."""
        drift = mean[:self.w0.numel()] - self.w0
        (distance,) = self.ctx.comm.reduce_metrics([float(torch.dot(drift, drift))], op="max")
        return distance <= self.delta


def average_members(comm: Comm, rows: torch.Tensor, members: np.ndarray, uploaded: np.ndarray) -> torch.Tensor:
    """The mean of the ``members``' rows (a mask over all devices), known to every rank; the
    rows are left as they are: what the coordinator computes before it answers (:func:`adopt_`).
    One round; members not yet ``uploaded`` upload their row, nobody downloads anything yet."""
    total = rows[torch.from_numpy(comm.mine(members))].sum(0)
    row_bytes = rows.shape[1] * rows.element_size()
    comm.allreduce_sum_(total, up_bytes=np.where(comm.mine(members & ~uploaded), row_bytes, 0), down_bytes=0)
    return total.div_(int(members.sum()))


def adopt_(comm: Comm, rows: torch.Tensor, value: torch.Tensor, members: np.ndarray) -> None:
    """The ``members`` (a mask over all devices) download ``value`` into their rows: the
    coordinator's answer, which needs no collective, since every rank already holds it
    (:func:`average_members`)."""
    start = time.perf_counter()
    mine = comm.mine(members)
    rows[torch.from_numpy(mine)] = value
    comm.count(0, np.where(mine, rows.shape[1] * rows.element_size(), 0), start, rounds=0)
