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

JITTER_STREAM = 0x4A17  # keeps the per-round draws apart from the per-device ones of the same seed

# preset: (uplink Mbit/s, downlink Mbit/s, one-way latency ms)
PRESETS: dict[str, tuple[float, float, float]] = {
    "lan": (1000.0, 1000.0, 0.5),
    "wifi": (50.0, 100.0, 5.0),
    "4g": (10.0, 30.0, 40.0),
    "3g": (1.0, 3.0, 100.0),
}


@dataclass(frozen=True)
class Link:
    """One device's modelled link, how much slower than this machine it computes, and (when
    ``network.step_ms`` is set) how long its local step takes, modelled rather than measured."""

    up_bytes_per_s: float
    down_bytes_per_s: float
    latency_s: float
    compute_factor: float = 1.0
    step_s: float | None = None

    def upload_s(self, up: int) -> float:
        return self.latency_s + up / self.up_bytes_per_s

    def download_s(self, down: int) -> float:
        return self.latency_s + down / self.down_bytes_per_s

    def compute_s(self, measured_s: float) -> float:
        """The modelled device's time for one local step that took ``measured_s`` here."""
        return self.step_s if self.step_s is not None else measured_s * self.compute_factor


def device_links(cfg: NetworkConfig, seed: int, devices: int) -> list[Link]:
    """Every device's link: the preset (or custom values), with seeded per-device spread.

    ``spread`` and ``compute_spread`` are the sigmas of log-normal factors drawn per device,
    from a stream that depends only on the seed, so every rank knows every device's link.
    """
    up, down, latency = PRESETS[cfg.preset]
    up = cfg.up_mbps if cfg.up_mbps is not None else up
    down = cfg.down_mbps if cfg.down_mbps is not None else down
    latency = cfg.latency_ms if cfg.latency_ms is not None else latency
    links = []
    for stream in np.random.SeedSequence(seed).spawn(devices):
        bandwidth, compute = np.exp(np.random.default_rng(stream).normal(0.0, [cfg.spread, cfg.compute_spread]))
        factor = cfg.compute_factor * compute
        step_s = cfg.step_ms / 1e3 * factor if cfg.step_ms is not None else None
        links.append(Link(up * bandwidth * 1e6 / 8, down * bandwidth * 1e6 / 8, latency / 1e3, factor, step_s))
    return links


class Deadline:
    """Stragglers: the server closes a round ``seconds`` after it opened; a device whose modelled
    compute and upload take longer is dropped from it.

    Needs modelled step times (``network.step_ms``), so who is late is a function of the config
    alone: every rank computes the same verdict for every device, without talking.
    """

    def __init__(self, seconds: float, links: list[Link]) -> None:
        self.seconds = seconds
        self.step_s = np.array([link.step_s or 0.0 for link in links])
        self.latency_s = np.array([link.latency_s for link in links])
        self.up_bytes_per_s = np.array([link.up_bytes_per_s for link in links])

    def on_time(self, steps: int, up_bytes: int, slowdown: np.ndarray | float = 1.0) -> np.ndarray:
        """Which devices deliver ``up_bytes`` after ``steps`` local steps before the deadline,
        each taking ``slowdown`` times as long this round (:class:`Jitter`)."""
        return (steps * self.step_s + self.latency_s + up_bytes / self.up_bytes_per_s) * slowdown <= self.seconds


class Jitter:
    """Per-round variation (``network.jitter``): in each exchange every device's round, its
    local steps and its transfers, takes a fresh log-normal factor as long, so the stragglers
    differ from round to round. The factors depend on the seed and the exchange's number
    alone: every rank, and a resumed run, draws the same without talking."""

    def __init__(self, sigma: float, seed: int, devices: int) -> None:
        self.sigma, self.seed, self.devices = sigma, seed, devices
        self._drawn: tuple[int, np.ndarray] = (-1, np.empty(0))  # (exchange, its factors)

    def factors(self, exchange: int) -> np.ndarray:
        """Every device's slowdown in exchange number ``exchange`` (0, 1, …)."""
        if self._drawn[0] != exchange:
            rng = np.random.default_rng([self.seed, JITTER_STREAM, exchange])
            self._drawn = (exchange, np.exp(rng.normal(0.0, self.sigma, self.devices)))
        return self._drawn[1]
