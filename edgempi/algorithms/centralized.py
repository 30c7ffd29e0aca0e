"""The reference: one process with all the data; nothing crosses a network."""
from dataclasses import dataclass

from edgempi.algorithms.base import Capabilities, MethodSettings, Policy
from edgempi.registry import METHODS
from edgempi.settings import require


@dataclass
class CentralizedSettings(MethodSettings):
    def check_world(self, world_size: int) -> None:
        require(world_size == 1, "algorithm.name",
                f"centralized runs on one rank, but the job has {world_size} (drop mpiexec -n)")


@METHODS.register("centralized")
class Centralized(Policy):
    """Local SGD on the whole training set; the loop's defaults are exactly that."""

    Settings = CentralizedSettings
    capabilities = Capabilities(exchanges=False, virtual_devices=False, drops_stragglers=False)
