"""Dynamic averaging (Kamp et al., ECML-PKDD 2018): sync only when some device drifted too far.

Every ``check_every`` local steps each device tests its local condition ‖w − r‖² > Δ against the
reference r (the average at the last sync). One 4-byte control Allreduce counts the violators;
if any device violated, all average their weights. Since every device that did not violate has
‖w − r‖² ≤ Δ, and the mean minimises the squared distances, no sync means the divergence
(1/m)Σ‖wᵢ − w̄‖² ≤ (1/m)Σ‖wᵢ − r‖² ≤ Δ. The paper's balancing variant (average only the violators
plus random others first) is left out: full syncs only.
"""
from __future__ import annotations

from typing import Any

import torch

from edgempi.algorithms.base import Context
from edgempi.algorithms.drift import DriftPolicy


class Dynamic(DriftPolicy):
    sync_columns = ("violators",)

    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        self.check_every = ctx.cfg.algorithm.check_every
        self.delta = ctx.cfg.algorithm.delta

    def after_step(self, step: int) -> dict[str, Any] | None:
        if (step + 1) % self.check_every:
            return None
        violated = [[float(torch.dot(delta, delta)) > self.delta] for delta in self.drifts()]
        (violators,) = self.ctx.comm.allreduce_ctrl(violated)
        if violators == 0 or self.sync() is None:
            return None
        return {"step": step + 1, "violators": int(violators)}
