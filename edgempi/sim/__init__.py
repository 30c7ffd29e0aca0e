"""The modelled edge: the devices' links (:mod:`~edgempi.sim.links`) and the simulated clock,
deadlines and jitter (:mod:`~edgempi.sim.clock`). Nothing here calls MPI: the clock hears of
each exchange from the comm layer and reduces through it."""
from edgempi.sim.clock import JITTER_STREAM, Clock, Deadline, Jitter
from edgempi.sim.links import Link, device_link, device_links
from edgempi.sim.settings import PRESETS, NetworkConfig

__all__ = ["JITTER_STREAM", "PRESETS", "Clock", "Deadline", "Jitter", "Link", "NetworkConfig", "device_link",
           "device_links"]
