"""Spatially partitioned (tiled, fused, grouped) training of a CNN's first layers across ranks."""
from edgempi.spatial.geometry import Window, check_groups, plan_front
from edgempi.spatial.model import SpatialModel
from edgempi.spatial.vgg import spatial_vgg, split_front

__all__ = ["SpatialModel", "Window", "check_groups", "plan_front", "spatial_vgg", "split_front"]
