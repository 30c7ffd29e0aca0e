"""What this machine can give a rank: CPUs (a cgroup quota, cores other work keeps busy) and memory.

A cgroup CPU quota (``docker --cpus``, Kubernetes CPU limits, systemd ``CPUQuota``) leaves the
affinity mask untouched, so a rank that sized its thread pool by the mask alone would run, say,
16 threads per rank inside an 8-CPU container, and mostly wait; a memory limit likewise leaves
/proc/meminfo as it is. Both cgroup versions are read, v2 (``cpu.max``, ``memory.max``) and v1
(``cpu.cfs_quota_us``, ``memory.limit_in_bytes``), and the tightest limit from this process's
cgroup up to the hierarchy's root counts.
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from pathlib import Path

PROC_CGROUP = Path("/proc/self/cgroup")
CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_STAT = Path("/proc/stat")
PROC_MEMINFO = Path("/proc/meminfo")
UNLIMITED = 1 << 62  # cgroup v1 writes "no limit" as a number near 2^63


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


def _memory_v2(folder: Path) -> float:
    limit = (folder / "memory.max").read_text().strip()
    return math.inf if limit == "max" else int(limit) - int((folder / "memory.current").read_text())


def _memory_v1(folder: Path) -> float:
    limit = int((folder / "memory.limit_in_bytes").read_text())
    return math.inf if limit >= UNLIMITED else limit - int((folder / "memory.usage_in_bytes").read_text())


def _cgroup_min(controller: str, read_v2: Callable[[Path], float], read_v1: Callable[[Path], float],
                proc_cgroup: Path, root: Path) -> tuple[float, str]:
    """The tightest value ``read`` finds over this process's cgroups of ``controller``."""
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
            mount, read = (root if (root / "cgroup.controllers").exists() else root / "unified"), read_v2
        elif controller in controllers.split(","):
            mount = next((m for m in (root / controllers, root / controller) if m.is_dir()), root / controller)
            read = read_v1
        else:
            continue
        if mount.is_dir():
            best = min(best, _tightest(mount, path, read))
    return best


def cgroup_cpu_limit(proc_cgroup: Path = PROC_CGROUP, root: Path = CGROUP_ROOT) -> tuple[float, str]:
    """CPUs this process's cgroups allow (``inf`` if no quota) and the cgroup that limits it
    (ranks naming the same one share that quota)."""
    return _cgroup_min("cpu", _v2, _v1, proc_cgroup, root)


def available_memory(meminfo: Path = PROC_MEMINFO, proc_cgroup: Path = PROC_CGROUP,
                     root: Path = CGROUP_ROOT) -> tuple[float, str]:
    """Bytes this process could still allocate (``inf`` if unknown), and what limits it: the
    kernel's MemAvailable, or the room left under the tightest cgroup memory limit."""
    found = (math.inf, "")
    try:
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                found = (int(line.split()[1]) * 1024, "MemAvailable in /proc/meminfo")
    except (OSError, ValueError, IndexError):
        pass
    limit, where = _cgroup_min("memory", _memory_v2, _memory_v1, proc_cgroup, root)
    return min(found, (max(0.0, limit), f"the memory limit of cgroup {where}"))


def _cpu_times(cpus: set[int], stat: Path) -> tuple[int, int]:
    """(busy, total) clock ticks of ``cpus`` since boot, from /proc/stat."""
    busy = total = 0
    for line in stat.read_text().splitlines():
        name, *fields = line.split()
        if name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in cpus:
            ticks = [int(f) for f in fields[:8]]  # user nice system idle iowait irq softirq steal
            busy += sum(ticks) - ticks[3] - ticks[4]
            total += sum(ticks)
    return busy, total


def busy_cpus(cpus: Iterable[int], window_s: float = 0.2, stat: Path = PROC_STAT) -> float:
    """How many of ``cpus`` other work keeps busy: their busy share over the next ``window_s``
    seconds, while this job's ranks sleep (0 if /proc/stat cannot be read)."""
    cpus = set(cpus)
    try:
        busy0, total0 = _cpu_times(cpus, stat)
        time.sleep(window_s)
        busy1, total1 = _cpu_times(cpus, stat)
    except (OSError, ValueError):
        return 0.0
    return len(cpus) * (busy1 - busy0) / (total1 - total0) if total1 > total0 else 0.0


def fair_share(own: int, node: int, ranks: int, quota: float = math.inf, sharing: int = 1) -> int:
    """Threads for one rank: its share of the node's ``node`` usable cores among ``ranks``,
    at most its ``own`` cores, at most its share of a ``quota`` that ``sharing`` ranks are under."""
    return max(1, int(min(own, node // ranks, quota / sharing)))
