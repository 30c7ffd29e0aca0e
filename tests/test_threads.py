"""Torch threads per rank follow the cores a rank may use, not the machine's core count."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import child_env, mpiexec
from edgempi.cpu_quota import cgroup_cpu_limit, fair_share

PRINT_CORES = ("import sys\nfrom mpi4py import MPI\nimport edgempi.topology\nfrom edgempi.comm import Comm\n"
               "edgempi.topology.cgroup_cpu_limit = lambda: (float(sys.argv[1]), 'one cgroup')\n"
               "cores = MPI.COMM_WORLD.gather(edgempi.topology.cores_per_rank(Comm()))\n"
               "if MPI.COMM_WORLD.rank == 0: print(cores)\n")


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two usable cores")
def test_cores_per_rank_follow_the_affinity_mask_shared_by_the_ranks_of_a_node():
    """The machine's own cgroup quota (a CI container may have one) is replaced by the test's:
    none for the mask cases, 1.5 CPUs for the last."""
    everything = os.sched_getaffinity(0)
    one_core = {min(everything)}

    def cores(*launch: str, quota: str = "inf", mask: set[int] = everything) -> list[int]:
        out = subprocess.run([*launch, sys.executable, "-c", PRINT_CORES, quota], capture_output=True, text=True,
                             timeout=120, env=child_env(), preexec_fn=lambda: os.sched_setaffinity(0, mask))
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)

    assert cores(mpiexec(), "-n", "1") == [len(everything)]
    assert cores(mpiexec(), "-n", "2") == [len(everything) // 2] * 2
    assert cores(mpiexec(), "-n", "2", mask=one_core) == [1, 1]  # a cpuset of one core, shared
    assert cores(mask=one_core) == [1]
    assert cores(mpiexec(), "-n", "1", quota="1.5") == [1]  # a CPU-limited container: its quota, not its mask


def cgroup_files(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


@pytest.mark.parametrize("proc, files, expected", [
    ("0::/kubepods/pod1/ctr\n",  # v2: the tightest quota on the way up counts
     {"fs/cgroup.controllers": "cpu", "fs/kubepods/pod1/ctr/cpu.max": "max 100000",
      "fs/kubepods/pod1/cpu.max": "250000 100000", "fs/kubepods/cpu.max": "800000 100000"},
     (2.5, "fs/kubepods/pod1")),
    ("4:cpu,cpuacct:/docker/abc\n0::/\n",  # v1 beside v2 (hybrid), docker --cpus=3 on the host path
     {"fs/cpu,cpuacct/docker/abc/cpu.cfs_quota_us": "300000", "fs/cpu,cpuacct/docker/abc/cpu.cfs_period_us": "100000",
      "fs/cpu,cpuacct/cpu.cfs_quota_us": "-1", "fs/cpu,cpuacct/cpu.cfs_period_us": "100000", "fs/unified/x": ""},
     (3.0, "fs/cpu,cpuacct/docker/abc")),
    ("4:cpu,cpuacct:/docker/abc\n",  # the same seen from inside the container: its cgroup is the mount
     {"fs/cpu,cpuacct/cpu.cfs_quota_us": "150000", "fs/cpu,cpuacct/cpu.cfs_period_us": "100000"},
     (1.5, "fs/cpu,cpuacct")),
    ("4:cpu,cpuacct:/\n0::/\n", {"fs/cpu,cpuacct/cpu.cfs_quota_us": "-1",  # no quota anywhere
                                  "fs/cpu,cpuacct/cpu.cfs_period_us": "100000", "fs/unified/x": ""}, (math.inf, "")),
    ("1:memory:/a\n", {"fs/memory/a/x": ""}, (math.inf, "")),  # no cpu controller
])
def test_cgroup_cpu_limit_reads_v1_and_v2_quotas(tmp_path: Path, proc: str, files: dict, expected) -> None:
    cgroup_files(tmp_path, {"proc": proc, **files})
    quota, limiter = cgroup_cpu_limit(tmp_path / "proc", tmp_path / "fs")
    assert (quota, limiter.replace(f"{tmp_path}/", "")) == expected


def test_cgroup_cpu_limit_without_cgroups_is_no_limit(tmp_path: Path) -> None:
    assert cgroup_cpu_limit(tmp_path / "missing", tmp_path) == (math.inf, "")


@pytest.mark.parametrize("args, expected", [
    ((64, 64, 4), 16),  # unbound ranks on a 64-core node
    ((4, 64, 16), 4),  # each bound to its own 4 cores
    ((1, 4, 2), 1),  # bound unevenly: never more than its own
    ((64, 64, 4, 8.0, 4), 2),  # an 8-CPU container on a 64-core host, 4 ranks inside
    ((64, 64, 4, 8.0, 1), 8),  # each rank in a cgroup of its own
    ((64, 64, 4, 0.5, 4), 1),  # at least one thread
])
def test_fair_share(args: tuple, expected: int) -> None:
    assert fair_share(*args) == expected
