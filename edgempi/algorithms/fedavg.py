"""Federated Averaging: local SGD steps, then the weights (and BN statistics) averaged."""
from typing import Any

from edgempi.algorithms.base import Context, Policy


class FedAvg(Policy):
    models_differ = True

    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        a = ctx.cfg.algorithm
        self.period = a.local_steps or max(1, round(a.local_epochs * ctx.steps_per_epoch))

    def after_step(self, step: int) -> dict[str, Any] | None:
        if (step + 1) % self.period:
            return None
        self.ctx.comm.allreduce_mean_(self.ctx.flat.exchanged(self.ctx.cfg.algorithm.average_buffers))
        return {"step": step + 1}
