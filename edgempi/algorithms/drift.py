"""What dynamic averaging and FDA share: the drift w − w₀ of each device since the last sync.

Both keep w₀ (the average at the last sync) as one flat tensor beside the parameters and end a
round with one weight Allreduce; they differ only in the rule that decides when.
"""
from __future__ import annotations

import torch

from edgempi.algorithms.base import Context, Policy


class DriftPolicy(Policy):
    models_differ = True

    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        params = ctx.flat.params
        self.w0 = torch.empty_like(params)
        self._delta = torch.empty_like(params)

    def after_backward(self, step: int) -> None:
        # The loop broadcasts the starting model after building the policy: take w₀ from it here,
        # before the first optimizer step.
        if step == 0:
            self.w0.copy_(self.ctx.flat.params)

    def drift(self) -> torch.Tensor:
        """Δ = w − w₀ on this device (a scratch buffer, valid until the next call)."""
        return torch.sub(self.ctx.flat.params, self.w0, out=self._delta)

    def sync(self) -> torch.Tensor:
        """Average the weights over all devices and restart from there; returns w₀_new − w₀_old."""
        flat = self.ctx.flat
        self.ctx.comm.allreduce_mean_(flat.exchanged(self.ctx.cfg.algorithm.average_buffers))
        update = self.drift()
        self.w0.copy_(flat.params)
        return update
