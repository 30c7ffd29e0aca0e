"""Server optimizers (FedOpt, Reddi et al., ICLR 2021) after a weight average.

The server treats Δ = w_avg − w_global as a pseudo-gradient (pointing downhill) and steps

    sgd (FedAvgM, Hsu et al. 2019):  m = μ·m + Δ;                         w = w + η·m
    adagrad:                         m = β₁·m + (1 − β₁)·Δ;  v = v + Δ²
    yogi:                            m as adagrad;  v = v − (1 − β₂)·Δ²·sign(v − Δ²)
    adam:                            m as adagrad;  v = β₂·v + (1 − β₂)·Δ²
    (adaptive ones)                                                        w = w + η·m / (√v + ε)

with v starting at τ², ε = τ and no bias correction (Algorithm 2 of the paper). Keras' Adam,
the FedAdam server of the FDA paper's code, is ``server_bias_correction``: m and v start at 0
and the t-th step is w = w + η·√(1 − β₂ᵗ)/(1 − β₁ᵗ)·m / (√v + ε), ε = ``server_eps`` (1e-7 in
Keras). Every rank holds the same average and the same state, so every rank computes the same
step: no extra traffic.
Plain averaging (``none``, or ``sgd`` with η = 1 and μ = 0) writes no step at all, so it is
bit for bit the average (w + (w_avg − w) would round).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from edgempi.algorithms.base import FederatedSettings
from edgempi.devices import DeviceBank
from edgempi.settings import exclusive, one_of, require
from edgempi.util.lazy import torch

SERVER_OPTIMIZERS = ("none", "sgd", "adam", "yogi", "adagrad")
ADAPTIVE = ("adam", "yogi", "adagrad")
DEFAULT_LR = {"sgd": 1.0, "adam": 0.01, "yogi": 0.01, "adagrad": 0.1}  # FedAvgM's η = 1; Reddi et al.'s grids


@dataclass
class ServerSettings(FederatedSettings):
    """The server step after each average; defaults: β₁ 0.9, β₂ 0.99, τ 1e-3 (Reddi et al.),
    μ 0.9 (Hsu et al.), η by optimizer (``DEFAULT_LR``) unless ``server_lr`` is set."""

    server_optimizer: str = exclusive("none", "server optimizers are for methods that average weights "
                                              "(fedavg, fedprox, dynamic, fda)")
    """A server step on the averaged update (FedOpt): ``sgd`` is FedAvgM; ``none``: plain averaging."""
    server_lr: float | None = None
    """The server step size η; unset: 1 for ``sgd``, 0.01 for ``adam`` and ``yogi``, 0.1 for ``adagrad``."""
    server_momentum: float = 0.9
    """``sgd`` server: momentum μ."""
    server_beta1: float = 0.9
    """``adam``, ``yogi``, ``adagrad`` server: β₁, the decay of the update's running mean."""
    server_beta2: float = 0.99
    """``adam``, ``yogi`` server: β₂, the decay of the update's second moment."""
    server_tau: float = 1e-3
    """``adam``, ``yogi``, ``adagrad`` server: τ, added to √v (the degree of adaptivity)."""
    server_eps: float | None = None
    """``adam``, ``yogi``, ``adagrad`` server: ε added to √v instead of τ; unset: τ."""
    server_bias_correction: bool = False
    """``adam`` server: Keras' form, m₀ = v₀ = 0 and a bias-corrected step (the FDA paper's FedAdam)."""

    def check(self, cfg: Any) -> None:
        super().check(cfg)
        one_of(self.server_optimizer, SERVER_OPTIMIZERS, "algorithm.server_optimizer")
        require(self.server_lr is None or self.server_lr > 0, "algorithm.server_lr", "must be > 0")
        require(0 <= self.server_momentum < 1, "algorithm.server_momentum", "must be in [0, 1)")
        require(0 <= self.server_beta1 < 1, "algorithm.server_beta1", "must be in [0, 1)")
        require(0 <= self.server_beta2 < 1, "algorithm.server_beta2", "must be in [0, 1)")
        require(self.server_tau > 0, "algorithm.server_tau", "must be > 0")
        require(self.server_eps is None or self.server_eps > 0, "algorithm.server_eps", "must be > 0")
        require(self.server_eps is None or self.server_optimizer in ADAPTIVE, "algorithm.server_eps",
                f"is for the adaptive server optimizers ({', '.join(ADAPTIVE)})")
        require(not self.server_bias_correction or self.server_optimizer == "adam", "algorithm.server_bias_correction",
                "is for algorithm.server_optimizer: adam")

    @property
    def server_step_lr(self) -> float:
        return self.server_lr if self.server_lr is not None else DEFAULT_LR.get(self.server_optimizer, 1.0)


class ServerOptimizer:
    """One server optimizer's state over the averaged part of the weights (a flat vector)."""

    def __init__(self, settings: ServerSettings, dim: int) -> None:
        s = settings
        self.kind, self.lr = s.server_optimizer, s.server_step_lr
        self.momentum, self.beta1, self.beta2 = s.server_momentum, s.server_beta1, s.server_beta2
        self.eps = s.server_tau if s.server_eps is None else s.server_eps
        self.bias_correction = s.server_bias_correction
        self.t = 0  # steps taken: the bias correction's exponent
        self.m = torch.zeros(dim)
        self.v = torch.zeros(dim) if self.bias_correction else torch.full((dim,), s.server_tau ** 2)

    @classmethod
    def create(cls, settings: Any, dim: int) -> ServerOptimizer | None:
        """None where the server step is plain averaging (or the method has no server step)."""
        kind = getattr(settings, "server_optimizer", "none")
        if kind == "none" or (kind == "sgd" and settings.server_step_lr == 1 and settings.server_momentum == 0):
            return None
        return cls(settings, dim)

    def step(self, delta: torch.Tensor) -> torch.Tensor:
        """The server's move for pseudo-gradient ``delta`` (consumed as scratch)."""
        self.t += 1
        if self.kind == "sgd":
            return self.m.mul_(self.momentum).add_(delta).mul(self.lr)
        self.m.mul_(self.beta1).add_(delta, alpha=1 - self.beta1)
        square = delta.mul_(delta)
        if self.kind == "adagrad":
            self.v.add_(square)
        elif self.kind == "yogi":
            self.v.addcmul_(square, torch.sign(self.v - square), value=-(1 - self.beta2))
        else:
            self.v.mul_(self.beta2).add_(square, alpha=1 - self.beta2)
        lr = self.lr
        if self.bias_correction:
            lr *= math.sqrt(1 - self.beta2 ** self.t) / (1 - self.beta1 ** self.t)
        return self.m.div(self.v.sqrt().add_(self.eps)).mul_(lr)

    def apply_(self, global_: torch.Tensor, bank: DeviceBank, index: torch.Tensor | None = None) -> None:
        """Every device of ``bank`` holds w_avg (at the positions ``index`` of its parameters, all
        if None); move them all to w_global + step(w_avg − w_global). ``global_`` is not changed."""
        params = bank.params
        if index is None:
            new = global_ + self.step(params[0] - global_)
            params.copy_(new.expand_as(params))
            return
        start = global_.index_select(0, index)
        new = start + self.step(params[0].index_select(0, index) - start)
        params.index_copy_(1, index, new.expand(params.shape[0], -1))

    def state_dict(self) -> dict[str, Any]:
        return {"m": self.m.clone(), "v": self.v.clone(), "t": self.t}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.m.copy_(state["m"])
        self.v.copy_(state["v"])
        self.t = int(state["t"])


def server_state(server: ServerOptimizer | None) -> dict[str, Any] | None:
    return None if server is None else server.state_dict()


def load_server_state(server: ServerOptimizer | None, state: dict[str, Any] | None) -> None:
    if server is not None and state is not None:  # saved by the same method: a state whenever a server
        server.load_state_dict(state)
