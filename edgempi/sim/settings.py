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
    up_mbps: float | None = None
    down_mbps: float | None = None
    latency_ms: float | None = None
    spread: float = 0.0
    compute_factor: float = 1.0
    compute_spread: float = 0.0
    step_ms: float | None = None  # modelled time of one local step (× compute factor) instead of the measured one
    deadline_s: float | None = None  # stragglers: a round closes this long after it opened (needs step_ms)
    jitter: float = 0.0  # sigma of a log-normal slowdown of each device's round, drawn afresh every exchange

    def check(self, cfg: Any) -> None:
        """This section's values, and the rules it makes for others (``cfg``: the whole
        ``edgempi.config.RunConfig``, not imported here)."""
        one_of(self.preset, PRESETS, "network.preset")
        for key in ("up_mbps", "down_mbps"):
            value = getattr(self, key)
            require(value is None or value > 0, f"network.{key}", "must be > 0")
        require(self.latency_ms is None or self.latency_ms >= 0, "network.latency_ms", "must be >= 0")
        require(self.spread >= 0, "network.spread", "must be >= 0 (sigma of a log-normal factor per device)")
        require(self.compute_factor > 0, "network.compute_factor", "must be > 0")
        require(self.compute_spread >= 0, "network.compute_spread", "must be >= 0")
        require(self.step_ms is None or self.step_ms > 0, "network.step_ms", "must be > 0")
        require(self.deadline_s is None or self.deadline_s > 0, "network.deadline_s", "must be > 0")
        require(self.jitter >= 0, "network.jitter", "must be >= 0 (sigma of a log-normal factor per device and round)")
        require(self.deadline_s is None or self.step_ms is not None, "network.deadline_s",
                "needs network.step_ms (modelled step times), so who is late is the same on every rank and every run")
        require(self.deadline_s is None or (cfg.compression.name == "none" and cfg.algorithm.drops_stragglers),
                "network.deadline_s", "stragglers are dropped from dense exchanges only (not with compression, "
                "sync_bn or centralized)")
