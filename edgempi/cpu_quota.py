"""A cgroup CPU quota (``docker --cpus``, Kubernetes CPU limits, systemd ``CPUQuota``).

A quota leaves the affinity mask untouched, so a rank that sized its thread pool by the mask
alone would run, say, 16 threads per rank inside an 8-CPU container, and mostly wait. Both
cgroup versions are read, v2 (``cpu.max``) and v1 (``cpu.cfs_quota_us``), and the tightest
quota from this process's cgroup up to the hierarchy's root counts.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Callable

PROC_CGROUP = Path("/proc/self/cgroup")
CGROUP_ROOT = Path("/sys/fs/cgroup")


def _v2(folder: Path) -> float:
    quota, period = (folder / "cpu.max").read_text().split()
    return math.inf if quota == "max" else int(quota) / int(period)


def _v1(folder: Path) -> float:
    quota = int((folder / "cpu.cfs_quota_us").read_text())
    return math.inf if quota <= 0 else quota / int((folder / "cpu.cfs_period_us").read_text())


def _tightest(mount: Path, path: str, read: Callable[[Path], float]) -> tuple[float, str]:
    """The smallest quota on the way up from ``path`` to ``mount``, and the cgroup that sets it.

    Without a cgroup namespace a container sees its own cgroup mounted as the root while
    /proc/self/cgroup names the host's path; then the mount itself is the cgroup."""
    folder = mount / path.lstrip("/")
    if not folder.is_dir():
        folder = mount
    best = (math.inf, "")
    while True:
        try:
            best = min(best, (read(folder), str(folder)))
        except (OSError, ValueError):
            pass  # no CPU controller here, or a file this kernel does not have
        if folder == mount:
            return best
        folder = folder.parent


def cgroup_cpu_limit(proc_cgroup: Path = PROC_CGROUP, root: Path = CGROUP_ROOT) -> tuple[float, str]:
    """CPUs this process's cgroups allow (``inf`` if no quota) and the cgroup that limits it
    (ranks naming the same one share that quota)."""
    try:
        entries = [line.split(":", 2) for line in proc_cgroup.read_text().splitlines()]
    except OSError:
        return math.inf, ""
    best = (math.inf, "")
    for entry in entries:
        if len(entry) != 3:
            continue
        _, controllers, path = entry
        if controllers == "":  # v2: mounted at the root, or beside v1 in a hybrid layout
            mount, read = (root if (root / "cgroup.controllers").exists() else root / "unified"), _v2
        elif "cpu" in controllers.split(","):
            mount, read = next((m for m in (root / controllers, root / "cpu") if m.is_dir()), root / "cpu"), _v1
        else:
            continue
        if mount.is_dir():
            best = min(best, _tightest(mount, path, read))
    return best


def fair_share(own: int, node: int, ranks: int, quota: float = math.inf, sharing: int = 1) -> int:
    """Threads for one rank: its share of the node's ``node`` usable cores among ``ranks``,
    at most its ``own`` cores, at most its share of a ``quota`` that ``sharing`` ranks are under."""
    return max(1, int(min(own, node // ranks, quota / sharing)))
