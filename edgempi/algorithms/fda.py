"""Federated Dynamic Averaging (Theologitis et al., EDBT 2025): sync when the model variance is high.

With w₀ the model at the last sync and Δₖ = wₖ − w₀, the variance of the devices' models is
Var = (1/K)Σ‖Δₖ‖² − ‖(1/K)ΣΔₖ‖². After every local step each device puts a small state into one
control Allreduce-mean, from which all compute the same over-estimate of Var; the round ends
(one weight Allreduce) when it exceeds Θ. The variants differ in how they bound ‖mean Δ‖² from
below: not at all (naive), by its projection on the last global update ξ (linear, Cauchy–Schwarz),
or by an AMS sketch of mean Δ (sketch). Optimizer state stays local.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from edgempi.algorithms.base import Capabilities, Context
from edgempi.algorithms.model_drift import DriftPolicy
from edgempi.algorithms.server import ServerSettings
from edgempi.algorithms.sketch import AmsSketch
from edgempi.config import RunConfig
from edgempi.registry import METHODS
from edgempi.settings import one_of, require
from edgempi.util.lazy import torch


@dataclass
class FDASettings(ServerSettings):
    """Θ is ``theta``, or ``theta_per_param`` × d when unset (the authors fitted 2.7e-5 … 4.9e-5)."""

    variant: str = "linear"
    """The variance estimate's state: ``naive`` ‖Δ‖², ``linear`` adds ⟨ξ, Δ⟩, ``sketch`` adds an AMS sketch of Δ."""
    theta: float | None = None
    """The model-variance threshold Θ; unset: ``theta_per_param`` × the number of parameters."""
    theta_per_param: float = 3.0e-5
    """Θ per parameter when ``theta`` is unset (the authors fitted 2.7e-5 … 4.9e-5)."""
    sketch_depth: int = 5
    """``sketch``: rows of the AMS sketch."""
    sketch_width: int = 250
    """``sketch``: columns of the AMS sketch."""

    def check(self, cfg: RunConfig) -> None:
        super().check(cfg)
        one_of(self.variant, VARIANTS, "algorithm.variant")
        require(self.theta is None or self.theta >= 0, "algorithm.theta", "must be >= 0")
        require(self.theta_per_param >= 0, "algorithm.theta_per_param", "must be >= 0")
        require(self.sketch_depth > 0, "algorithm.sketch_depth", "must be > 0")
        require(self.sketch_width > 0, "algorithm.sketch_width", "must be > 0")


class NaiveState:
    """State ‖Δ‖² (4 bytes); estimate mean‖Δ‖², which drops the −‖mean Δ‖² term."""

    extra = 0  # state values beyond ‖Δ‖²

    def __init__(self, dim: int, cfg: FDASettings, seed: int) -> None:
        self.state = torch.zeros(1 + self.extra, dtype=torch.float32)

    def local(self, delta: torch.Tensor) -> torch.Tensor:
        self.state[0] = torch.dot(delta, delta)
        return self.state

    def estimate(self, mean: np.ndarray) -> float:
        return float(mean[0])

    def synced(self, update: torch.Tensor) -> None:
        """Told the global update w₀_new − w₀_old of each sync."""


class LinearState(NaiveState):
    """State (‖Δ‖², ⟨ξ, Δ⟩) (8 bytes); ‖mean Δ‖² ≥ ⟨ξ, mean Δ⟩² for the unit vector ξ.

    ξ is the direction of the last global update, a good guess of where the devices drift
    together; before the first sync, a random unit vector drawn alike on every rank.
    """

    extra = 1

    def __init__(self, dim: int, cfg: FDASettings, seed: int) -> None:
        super().__init__(dim, cfg, seed)
        self.xi = torch.randn(dim, generator=torch.Generator().manual_seed(seed))
        self.xi.div_(self.xi.norm())

    def local(self, delta: torch.Tensor) -> torch.Tensor:
        super().local(delta)
        self.state[1] = torch.dot(self.xi, delta)
        return self.state

    def estimate(self, mean: np.ndarray) -> float:
        return float(mean[0] - mean[1] ** 2)

    def synced(self, update: torch.Tensor) -> None:
        norm = float(update.norm())
        if norm > 0:
            torch.div(update, norm, out=self.xi)


class SketchState(NaiveState):
    """State ‖Δ‖² and the AMS sketch of Δ (4 + 4·depth·width bytes).

    The mean of the sketches is the sketch of mean Δ; M, its estimate of ‖mean Δ‖², is within
    (1 ± ε)‖mean Δ‖² with high probability, so M/(1 + ε) is (w.h.p.) below it.
    """

    def __init__(self, dim: int, cfg: FDASettings, seed: int) -> None:
        self.sketch = AmsSketch(dim, cfg.sketch_depth, cfg.sketch_width, seed)
        super().__init__(dim, cfg, seed)

    @property
    def extra(self) -> int:  # type: ignore[override]
        return self.sketch.size

    def local(self, delta: torch.Tensor) -> torch.Tensor:
        super().local(delta)
        self.sketch.sketch_(delta, out=self.state[1:])
        return self.state

    def estimate(self, mean: np.ndarray) -> float:
        return float(mean[0] - self.sketch.sq_norm(mean[1:]) / (1 + self.sketch.epsilon))


VARIANTS: dict[str, type[NaiveState]] = {"naive": NaiveState, "linear": LinearState, "sketch": SketchState}


def threshold(cfg: FDASettings, dim: int) -> float:
    """Θ: ``theta`` if set, else ``theta_per_param`` × d."""
    return cfg.theta if cfg.theta is not None else cfg.theta_per_param * dim


@METHODS.register("fda")
class FDA(DriftPolicy):
    paper = ("Theologitis et al., Communication-Efficient Distributed Deep Learning via Federated Dynamic Averaging, "
             "EDBT 2025, arXiv:2405.20988")
    Settings = FDASettings
    settings: FDASettings
    capabilities = Capabilities(models_differ=True, sync_columns=("estimate",))

    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        a, dim = self.settings, ctx.flat.numel
        # Same seed on every rank: ξ and the sketch's hashes must agree for the mean to mean anything.
        seed = int(np.random.SeedSequence([ctx.cfg.seed, 0xFDA]).generate_state(1)[0])
        self.state = VARIANTS[a.variant](dim, a, seed)
        self.theta = threshold(a, dim)

    def state_dict(self) -> dict[str, Any]:
        """w₀ and, for the linear variant, ξ (the direction of the last global update)."""
        return {**super().state_dict(), "xi": getattr(self.state, "xi", None)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        if isinstance(self.state, LinearState) and state["xi"] is not None:
            self.state.xi.copy_(state["xi"])

    def estimate(self) -> float:
        """One control Allreduce-mean of the devices' states → the same estimate of Var on all."""
        states = np.stack([self.state.local(delta).numpy().copy() for delta in self.drifts()])
        total = self.ctx.comm.control(states)
        return self.state.estimate(total.astype(np.float64) / self.ctx.comm.devices)

    def after_step(self, step: int) -> dict[str, Any] | None:
        estimate = self.estimate()
        if not estimate > self.theta:
            return None
        update = self.sync()
        if update is None:
            return None
        self.state.synced(update)
        return {"step": step + 1, "estimate": estimate}
