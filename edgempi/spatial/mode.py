"""``parallel.mode: spatial`` as a :class:`~edgempi.parallel.ParallelMode`: the ranks of a tile
group are one device that trains one model, whose first layers they split into tiles.

The loop, the runner and the recorder see only the mode's interface. This module imports neither
torch nor MPI at its top (the parts that do are imported when a run is built), so that checking a
config and describing a results file stay light.
"""
from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from edgempi.parallel import ParallelMode

if TYPE_CHECKING:
    from torch import nn

    from edgempi.comm import Comm
    from edgempi.config import RunConfig
    from edgempi.data import Dataset
    from edgempi.sim import Link
    from edgempi.spatial.model import SpatialModel

GROUPS = "spatial_groups"  # the results-file attribute (results/README.md)


class SpatialMode(ParallelMode):
    """Ranks ``k·P … k·P + P − 1`` (P = rows × columns of ``parallel.grid``) are tile group k,
    one device; the ranks that hold the same tile in every group are peers. The fused layer
    groups a run trained with are recorded, so that a resumed ``groups: auto`` run keeps them
    instead of planning anew from timings measured at its restart."""

    recorded = (GROUPS,)

    def __init__(self, cfg: RunConfig) -> None:
        super().__init__(cfg)
        self.grid = (cfg.parallel.grid[0], cfg.parallel.grid[1])
        self.group: Comm | None = None
        self.model: SpatialModel | None = None

    def devices(self, ranks: int) -> int:
        return ranks // math.prod(self.grid)

    def peers(self, world: Comm) -> Comm:
        from edgempi.spatial.model import spatial_groups  # torch and MPI, when a run is built

        self.group, peers = spatial_groups(world, self.grid, share_ledger=True)
        return peers

    def wrap(self, model: nn.Module, dataset: Dataset, link: Link | None) -> nn.Module:
        from edgempi.spatial.setup import spatial_model

        assert self.group is not None and link is not None, "built by edgempi.train.build: peers() first, a clock"
        self.model = spatial_model(self.cfg, model, self.group, dataset.in_channels, dataset.input_size, link)
        self.group_reduce = self.model.allreduce_grads_
        return self.model

    def attrs(self) -> dict[str, str]:
        assert self.model is not None, "wrap() first"
        return {GROUPS: json.dumps([list(g) for g in self.model.groups])}

    @classmethod
    def resumed(cls, cfg: RunConfig, recorded: Mapping[str, str | None]) -> RunConfig:
        """The user's config with ``groups: auto`` replaced by the groups the file records;
        the config that is checked and recorded stays the user's."""
        groups = recorded.get(GROUPS)
        if groups is None or cfg.parallel.groups != "auto":
            return cfg
        return dataclasses.replace(cfg, parallel=dataclasses.replace(cfg.parallel, groups=json.loads(groups)))

    @staticmethod
    def describe(attrs: Mapping[str, Any]) -> list[str]:
        return [f"spatial layer groups: {attrs[GROUPS]}"] if attrs.get(GROUPS) else []
