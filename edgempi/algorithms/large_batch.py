"""Synchronous data-parallel SGD: every step, the devices' gradients averaged by one Allreduce
(or by the configured compressed exchange, with its error feedback)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from edgempi.algorithms.base import Context, MethodSettings, Policy
from edgempi.algorithms.compressed import exchange_state, load_exchange_state, make_exchange
from edgempi.registry import METHODS
from edgempi.settings import exclusive

if TYPE_CHECKING:
    import torch

    from edgempi.comm import Comm


@dataclass
class LargeBatchSettings(MethodSettings):
    """``sync_bn``: BatchNorm statistics over the global batch (reduced in forward and backward)."""

    sync_bn: bool = exclusive(False, "only large_batch synchronises BatchNorm")

    compresses = "gradients"
    spatial = True

    @property
    def virtual_devices(self) -> bool:
        return not self.sync_bn

    @property
    def drops_stragglers(self) -> bool:
        return not self.sync_bn


@METHODS.register("large_batch")
class LargeBatch(Policy):
    """Devices that miss the round's deadline (``network.deadline_s``) are left out of the mean;
    if none made it, the step is skipped."""

    Settings = LargeBatchSettings
    exchanges_gradients = True

    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        self.exchange = make_exchange(ctx)

    @classmethod
    def prepare_model(cls, settings: LargeBatchSettings, model: torch.nn.Module, comm: Comm) -> torch.nn.Module:
        if settings.sync_bn:
            from edgempi.models.syncbn import convert_sync_bn  # defines a torch.nn.Module: needs torch

            convert_sync_bn(model, comm)
        return model

    def after_backward(self, step: int) -> bool:
        if self.ctx.group_reduce is not None:  # spatial: a tile group's ranks are one device
            self.ctx.group_reduce(self.ctx.flat.grads)
            if self.ctx.comm.size == 1:
                return True
        if self.exchange is None:
            return self.ctx.average_(self.ctx.bank.grads) > 0
        self.exchange.exchange_mean_(self.ctx.flat.grads, step, step / self.ctx.steps_per_epoch)
        return True

    def state_dict(self) -> dict[str, Any]:
        return {"exchange": exchange_state(self.exchange)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        load_exchange_state(self.exchange, state["exchange"])
