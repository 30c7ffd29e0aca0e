"""Spatially partitioned (tiled, fused, grouped) training of a CNN's first layers across ranks.

Its parts are imported from their modules (``edgempi.spatial.model``, ``.planner``, ...): the
package itself imports nothing, so that naming ``parallel.mode: spatial`` or ``spatial_vgg``
(:mod:`edgempi.spatial.mode`, :mod:`edgempi.spatial.vgg`) does not start MPI.
"""
