"""Spatially partitioned (tiled, fused, grouped) training of a CNN's first layers across ranks."""
from edgempi.spatial.geometry import Window, check_groups, plan_front
from edgempi.spatial.model import SpatialModel, spatial_groups
from edgempi.spatial.planner import Plan, Profile, measure_link, measure_profile, plan_groups, predict
from edgempi.spatial.vgg import spatial_vgg, split_front

__all__ = ["Plan", "Profile", "SpatialModel", "Window", "check_groups", "measure_link",
           "measure_profile", "plan_front", "plan_groups", "predict", "spatial_groups", "spatial_vgg",
           "split_front"]
