"""Federated Averaging: local SGD steps, then the weights (and BN statistics) averaged.

With compression, what is sent is the update w − w_ref since the last sync (with its own
error feedback); the server replies with the dense mean update (counted as such).
"""
from dataclasses import dataclass
from typing import Any

from edgempi.algorithms.base import Capabilities, Context, Policy, participants
from edgempi.algorithms.compressed import exchange_state, load_exchange_state, make_exchange
from edgempi.algorithms.fedbn import average_shared_, has_batchnorm, shared_positions
from edgempi.algorithms.held import HeldModel, exchanged_positions
from edgempi.algorithms.server import ServerOptimizer, ServerSettings, load_server_state, server_state
from edgempi.config import RunConfig
from edgempi.registry import METHODS
from edgempi.settings import exclusive, require


@dataclass
class FedAvgSettings(ServerSettings):
    """A round is ``local_steps`` steps, or ``local_epochs`` passes over a device's shard.
    ``local_bn``: FedBN, every BatchNorm parameter and statistic stays on its device."""

    local_steps: int | None = None
    """Local steps per round (set this or ``local_epochs``)."""
    local_epochs: float | None = None
    """Passes over a device's shard per round (set this or ``local_steps``)."""
    local_bn: bool = exclusive(False, "FedBN (BatchNorm kept on each device) is for fedavg")
    """FedBN (Li et al., ICLR 2021): every BatchNorm parameter and statistic stays on its device."""
    cohort: int | None = exclusive(None, "cohort sampling is for the methods whose sampled devices start each round "
                                         "from the global model (fedavg, fedprox, FedOpt, scaffold); dynamic and "
                                         "fda watch every device every step")
    """Devices drawn each round from the population (ranks × devices_per_rank); only they train (unset: all)."""

    def check(self, cfg: RunConfig) -> None:
        super().check(cfg)
        require(not self.local_bn or cfg.compression.name == "none", "algorithm.local_bn",
                "FedBN is not combined with compression")
        require(not self.local_bn or has_batchnorm(cfg), "algorithm.local_bn",
                f"FedBN needs a model with BatchNorm ({cfg.model.name} has none here: set model.norm=batch)")
        require(self.server_optimizer == "none" or cfg.compression.name == "none", "algorithm.server_optimizer",
                "a server optimizer is not combined with compression")
        require((self.local_steps is None) != (self.local_epochs is None), "algorithm.local_steps",
                f"{self.name} needs exactly one of algorithm.local_steps and algorithm.local_epochs")
        require(self.local_steps is None or self.local_steps > 0, "algorithm.local_steps", "must be > 0")
        require(self.local_epochs is None or self.local_epochs > 0, "algorithm.local_epochs", "must be > 0")
        if self.cohort is not None:
            self.check_cohort(cfg, self.cohort)

    def check_cohort(self, cfg: RunConfig, cohort: int) -> None:
        """A cohort's member keeps no state between its rounds but its shard and its seed."""
        require(cohort > 0, "algorithm.cohort", "must be > 0")
        require(cfg.compression.name == "none", "algorithm.cohort", "cohort sampling is not combined with compression "
                "(its error feedback is state every device keeps)")
        require(not self.local_bn and self.average_buffers, "algorithm.cohort", "cohort sampling needs "
                "algorithm.average_buffers=true and local_bn=false: a device's own BatchNorm would be state it keeps")
        require(not cfg.data.drift.steps, "algorithm.cohort", "cohort sampling is not combined with data.drift")

    def period(self, steps_per_epoch: int) -> int:
        """Local steps per round."""
        return self.local_steps or max(1, round((self.local_epochs or 0) * steps_per_epoch))  # one is set


class PeriodicPolicy(Policy):
    """A method whose rounds end every ``period`` local steps (FedAvg and its kin)."""

    settings: FedAvgSettings
    held: HeldModel
    capabilities = Capabilities(models_differ=True, compresses="updates", sync_columns=("participants",))

    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        self.period = self.settings.period(ctx.steps_per_epoch)
        self.anchor = ctx.flat.params.clone()  # the model every device started this round from
        self.shared = shared_positions(ctx.flat.model) if self.settings.local_bn else None
        self.server = ServerOptimizer.create(self.settings, ctx.flat.numel if self.shared is None else len(self.shared))
        self.held = HeldModel(ctx.bank, exchanged_positions(ctx.bank, self.settings.average_buffers, self.shared))

    def round_ending(self, step: int) -> int | None:
        """The number (1, 2, …) of the round that ends with ``step``; None in mid-round."""
        return None if (step + 1) % self.period else (step + 1) // self.period

    def restart(self, record: dict[str, Any]) -> dict[str, Any]:
        """After a round's exchange: if anybody reported, every device now holds the average;
        the server's step (if any) moves them all to the new global model, where the next
        round starts."""
        if record["participants"] > 0:
            if self.server is not None:
                self.server.apply_(self.anchor, self.ctx.bank, self.shared)
            self.anchor.copy_(self.ctx.bank.params[0])
            self.held.capture()
        return record

    def average_(self, round_index: int) -> int:
        """One round's weight average over the devices that report; returns how many did."""
        ctx, with_buffers = self.ctx, self.settings.average_buffers
        mask = participants(self.settings, ctx.cfg.seed, ctx.comm.devices, round_index)
        if self.shared is not None:
            return average_shared_(ctx.average_, ctx.bank, self.shared, mask)
        return ctx.average_(ctx.bank.exchanged(with_buffers), mask)

    def state_dict(self) -> dict[str, Any]:
        return {"anchor": self.anchor.clone(), "server": server_state(self.server)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.anchor.copy_(state["anchor"])
        load_server_state(self.server, state.get("server"))


@METHODS.register("fedavg")
class FedAvg(PeriodicPolicy):
    paper = ("McMahan et al., Communication-Efficient Learning of Deep Networks from Decentralized Data, "
             "AISTATS 2017, arXiv:1602.05629")
    Settings = FedAvgSettings

    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        a = self.settings
        self.exchange = make_exchange(ctx, with_buffers=a.average_buffers, dense_downlink=True)
        self.reference = ctx.flat.exchanged(a.average_buffers).clone() if self.exchange else None

    def after_step(self, step: int) -> dict[str, Any] | None:
        round_index = self.round_ending(step)
        if round_index is None:
            return None
        if self.exchange is None:
            reported = self.average_(round_index)
            return self.restart({"step": step + 1, "participants": reported})  # 0: every device keeps its model
        state = self.ctx.flat.exchanged(self.settings.average_buffers)  # one device per rank, everyone reports
        assert self.reference is not None, "kept whenever there is an exchange"
        update = state - self.reference
        self.exchange.exchange_mean_(update, step, step / self.ctx.steps_per_epoch)
        state.copy_(self.reference.add_(update))
        return self.restart({"step": step + 1, "participants": self.ctx.comm.devices})

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "exchange": exchange_state(self.exchange), "reference": self.reference}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        load_exchange_state(self.exchange, state["exchange"])
        if self.reference is not None:
            self.reference.copy_(state["reference"])
