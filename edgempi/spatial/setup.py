"""From ``parallel: {mode: spatial, ...}`` to a SpatialModel: split the model, choose the groups."""
from __future__ import annotations

import sys

from torch import nn

from edgempi.comm import Comm
from edgempi.config import RunConfig
from edgempi.sim import Link
from edgempi.spatial.model import SpatialModel
from edgempi.spatial.planner import measure_profile, plan_groups
from edgempi.spatial.vgg import split_front


def spatial_model(cfg: RunConfig, model: nn.Module, group: Comm, in_channels: int, input_size: int,
                  link: Link) -> SpatialModel:
    """Partition the first ``parallel.layers`` layers of ``model`` over ``group``'s grid.

    ``groups: auto`` measures the layers on this machine and lets the planner pick the fused
    groups for this rank's modelled ``link`` (``network``); the plan is printed by the group's
    first rank.
    """
    if not isinstance(model, nn.Sequential):
        raise ValueError(f"parallel.mode: spatial needs a model that is one nn.Sequential "
                         f"(e.g. spatial_vgg), not {cfg.model.name}")
    par = cfg.parallel
    grid = (par.grid[0], par.grid[1])
    front, tail = split_front(model, par.layers)
    if isinstance(par.groups, list):
        groups = [(first, last) for first, last in par.groups]
    else:  # auto, the one string the config allows
        profile = measure_profile(front, tail, cfg.train.batch_size, in_channels, (input_size, input_size), comm=group)
        plan = plan_groups(profile, link, grid)
        if group.rank == 0:
            print(f"edgempi: spatial plan: {plan}", file=sys.stderr, flush=True)
        groups = plan.groups
    return SpatialModel(front, tail, group, grid, groups, (input_size, input_size))
