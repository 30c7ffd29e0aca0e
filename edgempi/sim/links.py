"""The devices' modelled links: how long the measured traffic would take on an edge network.

Edge uplinks are typically about twice as slow as downlinks (Edgify), and the slowest device
paces a synchronous exchange, so upload and download are timed separately. The planner of
a model's layers split into tiles prices its halo exchanges with the same :class:`Link`.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgempi.sim.settings import PRESETS, NetworkConfig


@dataclass(frozen=True)
class Link:
    """One device's modelled link, how much slower than this machine it computes, and (when
    ``network.step_ms`` is set) how long its local step takes, modelled rather than measured."""

    up_bytes_per_s: float
    down_bytes_per_s: float
    latency_s: float
    compute_factor: float = 1.0
    step_s: float | None = None

    @classmethod
    def symmetric(cls, bytes_per_s: float, latency_s: float) -> Link:
        """A link as fast both ways (e.g. one measured between two ranks)."""
        return cls(bytes_per_s, bytes_per_s, latency_s)

    def upload_s(self, up: int) -> float:
        return self.latency_s + up / self.up_bytes_per_s

    def download_s(self, down: int) -> float:
        return self.latency_s + down / self.down_bytes_per_s

    def compute_s(self, measured_s: float) -> float:
        """The modelled device's time for one local step that took ``measured_s`` here."""
        return self.step_s if self.step_s is not None else measured_s * self.compute_factor

    def __str__(self) -> str:
        up, down = (f"{rate * 8 / 1e9:.3g}" for rate in (self.up_bytes_per_s, self.down_bytes_per_s))
        return f"{up if up == down else f'{up} up, {down} down'} Gbit/s, {self.latency_s * 1e6:.3g} us"


def device_links(cfg: NetworkConfig, seed: int, devices: int) -> list[Link]:
    """Every device's link: the preset (or custom values), with seeded per-device spread.

    ``spread`` and ``compute_spread`` are the sigmas of log-normal factors drawn per device,
    from a stream that depends only on the seed, so every rank knows every device's link.
    """
    return [device_link(cfg, seed, device) for device in range(devices)]


def device_link(cfg: NetworkConfig, seed: int, device: int) -> Link:
    """Device ``device``'s link alone (:func:`device_links`' entry, from the same stream, child
    ``device`` of ``SeedSequence(seed)``): a cohort's members' links without the population's."""
    up, down, latency = PRESETS[cfg.preset]
    up = cfg.up_mbps if cfg.up_mbps is not None else up
    down = cfg.down_mbps if cfg.down_mbps is not None else down
    latency = cfg.latency_ms if cfg.latency_ms is not None else latency
    stream = np.random.SeedSequence(seed, spawn_key=(device,))
    bandwidth, compute = np.exp(np.random.default_rng(stream).normal(0.0, [cfg.spread, cfg.compute_spread]))
    factor = cfg.compute_factor * compute
    step_s = cfg.step_ms / 1e3 * factor if cfg.step_ms is not None else None
    return Link(up * bandwidth * 1e6 / 8, down * bandwidth * 1e6 / 8, latency / 1e3, factor, step_s)
