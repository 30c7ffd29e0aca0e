"""FedProx (Li et al., MLSys 2020): FedAvg whose devices minimise their loss plus the proximal
term (μ/2)‖w − w_global‖², which keeps heterogeneous devices near the last global model.

The term's gradient μ(w − w_global) is added to each device's gradient before its optimizer
step; everything that crosses the network is FedAvg's, so μ = 0 is FedAvg exactly.
"""
from dataclasses import dataclass

from edgempi.algorithms.fedavg import FedAvg, FedAvgSettings
from edgempi.config import RunConfig
from edgempi.registry import METHODS
from edgempi.settings import require
from edgempi.util.lazy import torch


@dataclass
class FedProxSettings(FedAvgSettings):
    mu: float = 0.01
    """Weight μ of the proximal term (μ/2)‖w − w_global‖² (0 is FedAvg; the paper tries 0.001 … 1)."""

    def check(self, cfg: RunConfig) -> None:
        super().check(cfg)
        require(self.mu >= 0, "algorithm.mu", "must be >= 0 (0 is FedAvg)")
        require(not self.local_bn, "algorithm.local_bn", "FedBN is not combined with fedprox (its proximal "
                "term would pull each device's BatchNorm towards another's)")


@METHODS.register("fedprox")
class FedProx(FedAvg):
    """The proximal term's anchor w_global is the round's starting model (``self.anchor``)."""
    paper = "Li et al., Federated Optimization in Heterogeneous Networks, MLSys 2020, arXiv:1812.06127"

    Settings = FedProxSettings
    settings: FedProxSettings

    def before_device_step(self, device: int, step: int) -> None:
        flat = self.ctx.flat
        flat.grads.add_(torch.sub(flat.params, self.anchor), alpha=self.settings.mu)
