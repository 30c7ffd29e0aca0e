"""SCAFFOLD (Karimireddy et al., ICML 2020), option II control variates.

Each device i keeps a control variate cᵢ, the server c; every local step follows the corrected
gradient g + c − cᵢ, which removes the client drift of non-IID data. At a round's end a device
that reports computes cᵢ⁺ = cᵢ − c + (x − yᵢ)/(K·η) (x: the round's starting model, yᵢ: its
model, K local steps at learning rate η) and uploads yᵢ and Δcᵢ = cᵢ⁺ − cᵢ in one exchange; the
server (global learning rate 1) takes x ← mean yᵢ and c ← c + |S|/N · mean Δcᵢ and every device
downloads both, so a round costs twice FedAvg's bytes each way. N is the population, also
under a cohort (S is then the cohort's reporters).

With ``algorithm.cohort`` a device's cᵢ outlives the rounds it trains in, while a rank's rows
stand for other devices each round (:mod:`edgempi.cohort`). Only the devices sampled so far
have a cᵢ (a device never sampled has cᵢ = 0 and takes no memory), and each is kept once in
the whole job: in its row while it trains, else in the :class:`Variates` of the rank that held
it last. At a round's start every rank puts its rows' cᵢ into its store and takes out the new
members' it holds; one sum over the ranks of a cohort-sized buffer, in which only the holder
fills a member's row, gives every rank its members' cᵢ. Kept where it last trained rather than
on a fixed owner rank (the cohort is dealt to ranks in sorted order, so a device trains on
different ranks in different rounds), cᵢ needs this one exchange per round, where an owner
needs a second to send cᵢ⁺ back at the round's end, and a copy on every rank needs ranks × the
memory. The exchange is the simulator's bookkeeping (an edge device keeps its own cᵢ), so it
is neither in the ledger nor on the simulated clock.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from edgempi import cohort
from edgempi.algorithms.base import Capabilities, Context, participants
from edgempi.algorithms.fedavg import FedAvgSettings, PeriodicPolicy
from edgempi.config import RunConfig
from edgempi.registry import METHODS
from edgempi.settings import require
from edgempi.util.lazy import torch


@dataclass
class ScaffoldSettings(FedAvgSettings):
    def check(self, cfg: RunConfig) -> None:
        super().check(cfg)
        require(cfg.train.optimizer == "sgd" and cfg.train.momentum == 0, "train.momentum",
                "scaffold's control variates (x − yᵢ)/(K·η) assume plain local SGD: set train.optimizer=sgd "
                "and train.momentum=0 (with momentum the correction overshoots and training diverges)")
        require(self.server_optimizer == "none", "algorithm.server_optimizer",
                "scaffold has its own server step (the averaged yᵢ); no server optimizer")
        require(not self.local_bn, "algorithm.local_bn", "FedBN is not combined with scaffold's control variates")

    def kept_rows(self, cfg: RunConfig, ranks: int) -> int:
        """With a cohort, the cᵢ of the devices sampled by the run's end (min(P, rounds × C)
        over the job; P when the rounds are not known before the data: train.epochs or
        local_epochs), as this rank's even share, and the buffer that hands them over."""
        if self.cohort is None:
            return 0
        population = cohort.population(cfg, ranks)
        sampled = population
        if cfg.train.steps and self.local_steps:
            sampled = min(population, -(-cfg.train.steps // self.local_steps) * self.cohort)
        return -(-sampled // ranks) + self.cohort


class Variates:
    """The cᵢ of the sampled devices this rank holds outside its rows, by population member."""

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self.rows: dict[int, torch.Tensor] = {}

    def put(self, members: np.ndarray, variates: torch.Tensor) -> None:
        for device, row in zip(members.tolist(), variates):
            self.rows[device] = row.clone()

    def take(self, members: np.ndarray, out: torch.Tensor) -> None:
        """Row j of ``out`` is member j's cᵢ where this store holds it, which it then forgets."""
        for j, device in enumerate(members.tolist()):
            row = self.rows.pop(device, None)
            if row is not None:
                out[j] = row

    def state_dict(self) -> dict[str, torch.Tensor]:
        ids = sorted(self.rows)
        return {"ids": torch.tensor(ids, dtype=torch.int64),
                "rows": torch.stack([self.rows[d] for d in ids]) if ids else torch.zeros(0, self.dim)}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.rows = {device: row.clone() for device, row in zip(state["ids"].tolist(), state["rows"])}


@METHODS.register("scaffold")
class Scaffold(PeriodicPolicy):
    paper = ("Karimireddy et al., SCAFFOLD: Stochastic Controlled Averaging for Federated Learning, "
             "ICML 2020, arXiv:1910.06378")
    Settings = ScaffoldSettings
    settings: ScaffoldSettings
    # The control variates travel dense; a device dropped at the deadline must not update cᵢ, and
    # only the exchange knows who (before_device_step: each gradient corrected by its own cᵢ).
    capabilities = Capabilities(models_differ=True, drops_stragglers=False, sync_columns=("participants",))

    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        bank, dim = ctx.bank, ctx.flat.numel  # self.anchor is x, the round's starting model
        self.c = torch.zeros(dim)
        self.c_local = torch.zeros(bank.count, dim)  # cᵢ of each device of this rank
        self.width = bank.exchanged(self.settings.average_buffers).shape[1]
        self.outbox = torch.zeros(bank.count, self.width + dim)  # [yᵢ (and BN statistics), Δcᵢ]
        self.population = cohort.population(ctx.cfg, ctx.comm.size)  # N
        self.store = Variates(dim)  # algorithm.cohort: the sampled devices' cᵢ outside c_local
        self.holders: np.ndarray | None = None  # algorithm.cohort: whose cᵢ c_local's rows are

    def begin_cohort(self, members: np.ndarray) -> None:
        comm = self.ctx.comm
        if self.holders is not None:
            self.store.put(self.holders, self.c_local)
        incoming = torch.zeros(len(members), self.c_local.shape[1])
        self.store.take(members, incoming)
        with comm.uncounted():
            comm.allreduce_sum_(incoming)
        self.c_local.copy_(incoming[comm.first:comm.first + comm.local])
        self.holders = comm.mine(members)

    def before_device_step(self, device: int, step: int) -> None:
        self.ctx.flat.grads.add_(self.c).sub_(self.c_local[device])

    def after_step(self, step: int) -> dict[str, Any] | None:
        round_index = self.round_ending(step)
        if round_index is None:
            return None
        ctx, width = self.ctx, self.width
        rows = ctx.bank.exchanged(self.settings.average_buffers)
        lr = ctx.optimizer.param_groups[0]["lr"]
        fresh = self.c_local - self.c + (self.anchor - ctx.bank.params) / (self.period * lr)  # cᵢ⁺
        self.outbox[:, :width] = rows
        torch.sub(fresh, self.c_local, out=self.outbox[:, width:])
        mask = participants(self.settings, ctx.cfg.seed, ctx.comm.devices, round_index)
        reported = ctx.average_(self.outbox, mask)
        if reported == 0:  # nobody reported: every device keeps its model and its cᵢ
            return self.restart({"step": step + 1, "participants": 0})
        rows.copy_(self.outbox[:, :width])
        self.c.add_(self.outbox[0, width:], alpha=reported / self.population)
        mine = np.ones(ctx.bank.count, bool) if mask is None else ctx.comm.mine(mask)
        self.c_local[torch.from_numpy(mine)] = fresh[torch.from_numpy(mine)]
        return self.restart({"step": step + 1, "participants": reported})

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "c": self.c.clone(), "c_local": self.c_local.clone(),
                "variates": self.store.state_dict(), "holders": self.holders}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.c.copy_(state["c"])
        self.c_local.copy_(state["c_local"])
        self.store.load_state_dict(state["variates"])
        self.holders = state["holders"]
