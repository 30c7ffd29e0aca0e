"""What dynamic averaging and FDA share: the drift w − w₀ of each device's model since the last sync
(the model's drift; the data's is :mod:`edgempi.data.concept_drift`).

Both keep w₀ (the average at the last sync, the same for every device) as one flat tensor and
end a round with one weight Allreduce; they differ only in the rule that decides when.
"""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from edgempi.algorithms.base import Capabilities, Context, Policy, participants
from edgempi.algorithms.held import HeldModel, exchanged_positions
from edgempi.algorithms.server import ServerOptimizer, ServerSettings, load_server_state, server_state
from edgempi.util.lazy import torch


class DriftPolicy(Policy):
    settings: ServerSettings
    held: HeldModel
    capabilities = Capabilities(models_differ=True)

    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        self.w0 = ctx.flat.params.clone()  # the loop builds policies after the starting model is shared
        self.rounds = 0  # syncs so far: the round index of the participation draw
        self._delta = torch.empty_like(self.w0)
        self.server = ServerOptimizer.create(self.settings, self.w0.numel())
        self.held = HeldModel(ctx.bank, exchanged_positions(ctx.bank, self.settings.average_buffers, None))

    def drift(self, device: int = 0) -> torch.Tensor:
        """Δ = w − w₀ of a device of this rank (a scratch buffer, valid until the next call)."""
        return torch.sub(self.ctx.bank.params[device], self.w0, out=self._delta)

    def drifts(self) -> Iterator[torch.Tensor]:
        """Δ of each device of this rank in turn (one scratch buffer, not one per device)."""
        for device in range(self.ctx.bank.count):
            yield self.drift(device)

    def state_dict(self) -> dict[str, Any]:
        return {"w0": self.w0.clone(), "rounds": self.rounds, "server": server_state(self.server)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.w0.copy_(state["w0"])
        self.rounds = state["rounds"]
        load_server_state(self.server, state.get("server"))

    def sync(self) -> torch.Tensor | None:
        """Average the weights over the devices that report (``algorithm.participation``,
        ``dropout``, ``network.deadline_s``), take the server's step if any, and restart from
        there; returns w₀_new − w₀_old, or None if nobody reported (every device keeps its
        model, the next sync draws anew)."""
        bank = self.ctx.bank
        self.rounds += 1
        mask = participants(self.settings, self.ctx.cfg.seed, self.ctx.comm.devices, self.rounds)
        if self.ctx.average_(bank.exchanged(self.settings.average_buffers), mask) == 0:
            return None
        if self.server is not None:
            self.server.apply_(self.w0, bank)
        update = self.drift()  # every device now holds the new global model
        self.w0.copy_(bank.params[0])
        self.held.capture()
        return update
