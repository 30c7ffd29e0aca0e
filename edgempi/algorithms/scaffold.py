"""SCAFFOLD (Karimireddy et al., ICML 2020), option II control variates.

Each device i keeps a control variate cᵢ, the server c; every local step follows the corrected
gradient g + c − cᵢ, which removes the client drift of non-IID data. At a round's end a device
that reports computes cᵢ⁺ = cᵢ − c + (x − yᵢ)/(K·η) (x: the round's starting model, yᵢ: its
model, K local steps at learning rate η) and uploads yᵢ and Δcᵢ = cᵢ⁺ − cᵢ in one exchange; the
server (global learning rate 1) takes x ← mean yᵢ and c ← c + |S|/N · mean Δcᵢ and every device
downloads both, so a round costs twice FedAvg's bytes each way.
"""
from dataclasses import dataclass
from typing import Any

import numpy as np

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
        require(self.cohort is None, "algorithm.cohort", "scaffold keeps a control variate per device, which "
                "cohort sampling does not store yet")


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
        self.c.add_(self.outbox[0, width:], alpha=reported / ctx.comm.devices)
        mine = np.ones(ctx.bank.count, bool) if mask is None else ctx.comm.mine(mask)
        self.c_local[torch.from_numpy(mine)] = fresh[torch.from_numpy(mine)]
        return self.restart({"step": step + 1, "participants": reported})

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "c": self.c.clone(), "c_local": self.c_local.clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.c.copy_(state["c"])
        self.c_local.copy_(state["c_local"])
