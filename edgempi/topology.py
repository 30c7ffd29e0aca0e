"""How many cores a rank may use: the size of its torch thread pool.

Too many threads per rank and the ranks of a node fight over its cores; too few and cores
idle. The node's ranks are found through the comm layer (the only place that calls MPI).
"""
from __future__ import annotations

import os
from typing import TYPE_CHECKING

from edgempi.cpu_quota import cgroup_cpu_limit, fair_share

if TYPE_CHECKING:
    from edgempi.comm import Comm
    from edgempi.config import RunConfig


def cores_per_rank(comm: Comm) -> int:
    """This node's usable cores (the union of its ranks' affinity masks) shared out among
    its ranks, never more than this rank's own mask, nor than its share of a cgroup CPU
    quota among the ranks under it: right whether the launcher bound each rank to its own
    cores or none at all, and inside a CPU-limited container."""
    own, (quota, limiter) = os.sched_getaffinity(0), cgroup_cpu_limit()
    masks, limiters = zip(*comm.node_allgather((own, limiter)))
    return fair_share(len(own), len(set().union(*masks)), len(masks), quota, limiters.count(limiter))


def threads_per_rank(cfg: RunConfig, comm: Comm) -> int:
    """``train.threads`` if set, else this rank's share of its node's cores."""
    return cfg.train.threads or cores_per_rank(comm)
