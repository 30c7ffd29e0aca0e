"""Federated Averaging: local SGD steps, then the weights (and BN statistics) averaged.

With compression, what is sent is the update w − w_ref since the last sync (with its own
error feedback); the server replies with the dense mean update (counted as such).
"""
from dataclasses import dataclass
from typing import Any

from edgempi.algorithms.base import Context, FederatedSettings, Policy, participants
from edgempi.algorithms.compressed import exchange_state, load_exchange_state, make_exchange
from edgempi.config import RunConfig
from edgempi.registry import METHODS
from edgempi.settings import require


@dataclass
class FedAvgSettings(FederatedSettings):
    """A round is ``local_steps`` steps, or ``local_epochs`` passes over a device's shard."""

    local_steps: int | None = None
    local_epochs: float | None = None

    compresses = "updates"

    def check(self, cfg: RunConfig) -> None:
        super().check(cfg)
        require((self.local_steps is None) != (self.local_epochs is None), "algorithm.local_steps",
                f"{self.name} needs exactly one of algorithm.local_steps and algorithm.local_epochs")
        require(self.local_steps is None or self.local_steps > 0, "algorithm.local_steps", "must be > 0")
        require(self.local_epochs is None or self.local_epochs > 0, "algorithm.local_epochs", "must be > 0")

    def period(self, steps_per_epoch: int) -> int:
        """Local steps per round."""
        return self.local_steps or max(1, round(self.local_epochs * steps_per_epoch))


class PeriodicPolicy(Policy):
    """A method whose rounds end every ``period`` local steps (FedAvg and its kin)."""

    settings: FedAvgSettings
    models_differ = True
    sync_columns = ("participants",)

    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        self.period = self.settings.period(ctx.steps_per_epoch)
        self.anchor = ctx.flat.params.clone()  # the model every device started this round from

    def round_ending(self, step: int) -> int | None:
        """The number (1, 2, …) of the round that ends with ``step``; None in mid-round."""
        return None if (step + 1) % self.period else (step + 1) // self.period

    def restart(self, record: dict[str, Any]) -> dict[str, Any]:
        """After a round's exchange: if anybody reported, every device now holds the new
        global model, where the next round starts."""
        if record["participants"] > 0:
            self.anchor.copy_(self.ctx.bank.params[0])
        return record

    def state_dict(self) -> dict[str, Any]:
        return {"anchor": self.anchor.clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.anchor.copy_(state["anchor"])


@METHODS.register("fedavg")
class FedAvg(PeriodicPolicy):
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
        with_buffers = self.settings.average_buffers
        if self.exchange is None:
            mask = participants(self.settings, self.ctx.cfg.seed, self.ctx.comm.devices, round_index)
            reported = self.ctx.average_(self.ctx.bank.exchanged(with_buffers), mask)
            return self.restart({"step": step + 1, "participants": reported})  # 0: every device keeps its model
        state = self.ctx.flat.exchanged(with_buffers)  # one device per rank, everyone reports (config)
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
