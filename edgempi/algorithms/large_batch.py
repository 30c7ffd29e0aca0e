"""Synchronous data-parallel SGD: every step, the devices' gradients averaged by one Allreduce
(or by the configured compressed exchange, with its error feedback)."""
from typing import Any

from edgempi.algorithms.base import Context, Policy
from edgempi.algorithms.compressed import exchange_state, load_exchange_state, make_exchange
from edgempi.spatial.model import SpatialModel


class LargeBatch(Policy):
    """Devices that miss the round's deadline (``network.deadline_s``) are left out of the mean;
    if none made it, the step is skipped."""

    exchanges_gradients = True

    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        self.exchange = make_exchange(ctx)

    def after_backward(self, step: int) -> bool:
        model = self.ctx.flat.model
        if isinstance(model, SpatialModel):  # the tile group's ranks are one device: sum their parts
            model.allreduce_grads_(self.ctx.flat.grads)
            if self.ctx.comm.size == 1:
                return True
        if self.exchange is None:
            return self.ctx.comm.allreduce_mean_(self.ctx.bank.grads) > 0
        self.exchange.exchange_mean_(self.ctx.flat.grads, step, step / self.ctx.steps_per_epoch)
        return True

    def state_dict(self) -> dict[str, Any]:
        return {"exchange": exchange_state(self.exchange)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        load_exchange_state(self.exchange, state["exchange"])
