"""How many cores a rank may use (the size of its torch thread pool), and whether a run fits its node.

Too many threads per rank and the ranks of a node fight over its cores; too few and cores
idle. The node's ranks are found through the comm layer (the only place that calls MPI). A
run that asks for more than its node has (threads beyond its cores, more memory than is free)
is refused here, in one line, before anything is allocated or written.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

from edgempi.host.machine import busy_cpus, cgroup_cpu_limit, fair_share

if TYPE_CHECKING:
    from edgempi.comm import Comm
    from edgempi.config import RunConfig


@dataclass
class NodeShare:
    """This rank's view of its node: its own cores, the node's usable cores (less those other
    work keeps busy), how many of this job's ranks share them, and a cgroup CPU quota with the
    number of ranks under it."""

    own: int
    cores: int
    free: int
    ranks: int
    quota: float
    sharing: int

    @property
    def threads(self) -> int:
        """This rank's share of its node's free cores, never more than its own mask, nor than its
        share of a cgroup CPU quota among the ranks under it: threads × ranks ≤ cores."""
        return fair_share(self.own, self.free, self.ranks, self.quota, self.sharing)


def node_share(comm: Comm) -> NodeShare:
    """The union of the node's ranks' affinity masks, capped by a cgroup quota, less the cores
    other jobs keep busy (measured by every rank of the node at once, while they all wait, and
    the largest count taken, so the ranks of a node agree): right whether the launcher bound
    each rank to its own cores or none at all, inside a CPU-limited container, and on a
    machine another job is using."""
    own, (quota, limiter) = os.sched_getaffinity(0), cgroup_cpu_limit()
    masks, limiters = zip(*comm.allgather_object((own, limiter), node=True))
    cpus = set().union(*masks)
    cores = max(1, min(len(cpus), math.ceil(quota) if math.isfinite(quota) else len(cpus)))
    busy = max(comm.allgather_object(busy_cpus(cpus), node=True))
    return NodeShare(len(own), cores, max(1, cores - round(busy)), len(masks), quota, limiters.count(limiter))


def fit(cfg: RunConfig, comm: Comm) -> str | None:
    """Size this rank's thread pool (``train.threads`` if set, else its share of the node's
    free cores), then check the run fits the node: why not, in one line, or None."""
    import torch

    from edgempi.host import footprint

    share = node_share(comm)
    if cfg.train.threads > share.cores:
        return (f"train.threads: {cfg.train.threads} threads per rank, but this node has {share.cores} usable "
                f"cores; set at most {share.cores}, or 0 to share them out among its {share.ranks} rank(s)")
    torch.set_num_threads(cfg.train.threads or share.threads)
    return footprint.refusal(cfg, share.ranks, comm.size)
