"""The modelled edge network behind ``sim_s``: how long the measured traffic would take there.

Edge uplinks are typically about twice as slow as downlinks (Edgify), and the slowest device
paces a synchronous exchange, so upload and download are timed separately.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from edgempi.config import NetworkConfig

# preset: (uplink Mbit/s, downlink Mbit/s, one-way latency ms)
PRESETS: dict[str, tuple[float, float, float]] = {
    "lan": (1000.0, 1000.0, 0.5),
    "wifi": (50.0, 100.0, 5.0),
    "4g": (10.0, 30.0, 40.0),
    "3g": (1.0, 3.0, 100.0),
}


@dataclass(frozen=True)
class Link:
    """One device's modelled link, and how much slower than this machine it computes."""

    up_bytes_per_s: float
    down_bytes_per_s: float
    latency_s: float
    compute_factor: float = 1.0

    def transfer_s(self, up: int, down: int) -> float:
        """Time for one exchange: upload then download, each paying the latency once."""
        if up == 0 and down == 0:
            return 0.0
        return 2 * self.latency_s + up / self.up_bytes_per_s + down / self.down_bytes_per_s


def device_link(cfg: NetworkConfig, seed: int, device: int, devices: int) -> Link:
    """The link of one device: the preset (or custom values), with seeded per-device spread.

    ``spread`` and ``compute_spread`` are the sigmas of log-normal factors drawn per device,
    from a stream that depends only on the seed, so every rank can compute every device's link.
    """
    up, down, latency = PRESETS[cfg.preset]
    up = cfg.up_mbps if cfg.up_mbps is not None else up
    down = cfg.down_mbps if cfg.down_mbps is not None else down
    latency = cfg.latency_ms if cfg.latency_ms is not None else latency
    rng = np.random.default_rng(np.random.SeedSequence(seed).spawn(devices)[device])
    bandwidth, compute = np.exp(rng.normal(0.0, [cfg.spread, cfg.compute_spread]))
    return Link(up * bandwidth * 1e6 / 8, down * bandwidth * 1e6 / 8, latency / 1e3,
                cfg.compute_factor * compute)
