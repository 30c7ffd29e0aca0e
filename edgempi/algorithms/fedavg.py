"""Federated Averaging: local SGD steps, then the weights (and BN statistics) averaged.

With compression, what is sent is the update w − w_ref since the last sync (with its own
error feedback); the server replies with the dense mean update (counted as such).
"""
from typing import Any


from edgempi.algorithms.base import Context, Policy, participants
from edgempi.algorithms.compressed import exchange_state, load_exchange_state, make_exchange


class FedAvg(Policy):
    models_differ = True
    sync_columns = ("participants",)

    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        a = ctx.cfg.algorithm
        self.period = a.local_steps or max(1, round(a.local_epochs * ctx.steps_per_epoch))
        self.exchange = make_exchange(ctx, with_buffers=a.average_buffers, dense_downlink=True)
        self.reference = ctx.flat.exchanged(a.average_buffers).clone() if self.exchange else None

    def after_step(self, step: int) -> dict[str, Any] | None:
        if (step + 1) % self.period:
            return None
        with_buffers = self.ctx.cfg.algorithm.average_buffers
        if self.exchange is None:
            mask = participants(self.ctx.cfg, self.ctx.comm.devices, (step + 1) // self.period)
            reported = self.ctx.comm.allreduce_mean_(self.ctx.bank.exchanged(with_buffers), mask)
            return {"step": step + 1, "participants": reported}  # 0: every device keeps its model
        state = self.ctx.flat.exchanged(with_buffers)  # one device per rank, everyone reports (config)
        update = state - self.reference
        self.exchange.exchange_mean_(update, step, step / self.ctx.steps_per_epoch)
        state.copy_(self.reference.add_(update))
        return {"step": step + 1, "participants": self.ctx.comm.devices}

    def state_dict(self) -> dict[str, Any]:
        return {"exchange": exchange_state(self.exchange), "reference": self.reference}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        load_exchange_state(self.exchange, state["exchange"])
        if self.reference is not None:
            self.reference.copy_(state["reference"])
