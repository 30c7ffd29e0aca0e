"""The ``network`` section of a run's config, and the named edge networks of ``network.preset``.

The modelled edge brings its own settings and checks (as methods and compressors do), in a
module that imports only :mod:`edgempi.settings`, so the config can hold them and the
simulation read them without an import cycle between the two.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from edgempi.settings import one_of, require

# preset: (uplink Mbit/s, downlink Mbit/s, one-way latency ms)
PRESETS: dict[str, tuple[float, float, float]] = {
    "lan": (1000.0, 1000.0, 0.5),
    "wifi": (50.0, 100.0, 5.0),
    "4g": (10.0, 30.0, 40.0),
    "3g": (1.0, 3.0, 100.0),
}


@dataclass
class NetworkConfig:
    preset: str = "lan"
    """The link, up/down Mbit/s and ms: ``lan`` 1000/1000/0.5, ``wifi`` 50/100/5, ``4g`` 10/30/40, ``3g`` 1/3/100."""
    up_mbps: float | None = None
    """Uplink bandwidth in Mbit/s, in place of the preset's."""
    down_mbps: float | None = None
    """Downlink bandwidth in Mbit/s, in place of the preset's."""
    latency_ms: float | None = None
    """One-way latency in ms, in place of the preset's."""
    spread: float = 0.0
    """σ of a seeded log-normal factor per device on its bandwidth (0: every device alike)."""
    compute_factor: float = 1.0
    """How many times longer a modelled device computes a step than this machine did."""
    compute_spread: float = 0.0
    """σ of a seeded log-normal factor per device on its compute time."""
    step_ms: float | None = None
    """Modelled time of one local step (× the compute factor) in place of the measured one, so ``sim_s`` repeats."""
    deadline_s: float | None = None
    """Stragglers: a round closes this long after it opened; devices that miss it are left out (needs ``step_ms``)."""
    jitter: float = 0.0
    """σ of a log-normal slowdown of each device's round, drawn afresh at every exchange."""

    def check(self, cfg: Any) -> None:
        """This section's values, and the rules it makes for others (``cfg``: the whole
        ``edgempi.config.RunConfig``, not imported here)."""
        one_of(self.preset, PRESETS, "network.preset")
        require(self.up_mbps is None or self.up_mbps > 0, "network.up_mbps", "must be > 0")
        require(self.down_mbps is None or self.down_mbps > 0, "network.down_mbps", "must be > 0")
        require(self.latency_ms is None or self.latency_ms >= 0, "network.latency_ms", "must be >= 0")
        require(self.spread >= 0, "network.spread", "must be >= 0 (sigma of a log-normal factor per device)")
        require(self.compute_factor > 0, "network.compute_factor", "must be > 0")
        require(self.compute_spread >= 0, "network.compute_spread", "must be >= 0")
        require(self.step_ms is None or self.step_ms > 0, "network.step_ms", "must be > 0")
        require(self.deadline_s is None or self.deadline_s > 0, "network.deadline_s", "must be > 0")
        require(self.jitter >= 0, "network.jitter", "must be >= 0 (sigma of a log-normal factor per device and round)")
        require(self.deadline_s is None or self.step_ms is not None, "network.deadline_s",
                "needs network.step_ms (modelled step times), so who is late is the same on every rank and every run")
        require(self.deadline_s is None or cfg.algorithm.capabilities.drops_stragglers, "network.deadline_s",
                f"{cfg.algorithm.name} does not leave stragglers out of its exchanges")
        require(self.deadline_s is None or cfg.compression.name == "none", "network.deadline_s",
                "stragglers are dropped from dense exchanges only (not with compression)")
