"""What dynamic averaging and FDA share: the drift w − w₀ of each device since the last sync.

Both keep w₀ (the average at the last sync) as one flat tensor beside the parameters and end a
round with one weight Allreduce; they differ only in the rule that decides when.
"""
from __future__ import annotations

from typing import Any

import torch

from edgempi.algorithms.base import Context, Policy


class DriftPolicy(Policy):
    models_differ = True

    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        self.w0 = ctx.flat.params.clone()  # the loop builds policies after the starting model is shared
        self._delta = torch.empty_like(self.w0)

    def drift(self) -> torch.Tensor:
        """Δ = w − w₀ on this device (a scratch buffer, valid until the next call)."""
        return torch.sub(self.ctx.flat.params, self.w0, out=self._delta)

    def state_dict(self) -> dict[str, Any]:
        return {"w0": self.w0.clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.w0.copy_(state["w0"])

    def sync(self) -> torch.Tensor:
        """Average the weights over all devices and restart from there; returns w₀_new − w₀_old."""
        flat = self.ctx.flat
        self.ctx.comm.allreduce_mean_(flat.exchanged(self.ctx.cfg.algorithm.average_buffers))
        update = self.drift()
        self.w0.copy_(flat.params)
        return update
