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

from edgempi.host.machine import cgroup_cpu_limit, fair_share

PRINT_CORES = ("import sys\nfrom mpi4py import MPI\nimport edgempi.host.topology\nfrom edgempi.comm import Comm\n"
               "edgempi.host.topology.cgroup_cpu_limit = lambda: (float(sys.argv[1]), 'one cgroup')\n"
               "edgempi.host.topology.busy_cpus = lambda cpus: float(sys.argv[2])\n"
               "cores = MPI.COMM_WORLD.gather(edgempi.host.topology.node_share(Comm()).threads)\n"
               "if MPI.COMM_WORLD.rank == 0: print(cores)\n")


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two usable cores")
def test_cores_per_rank_follow_the_affinity_mask_shared_by_the_ranks_of_a_node():
    """The machine's own cgroup quota (a CI container may have one) and the cores other jobs keep
    busy are replaced by the test's: none for the mask cases, then 1.5 CPUs, then all cores
    but one busy."""
    everything = os.sched_getaffinity(0)
    one_core = {min(everything)}

    def cores(*launch: str, quota: str = "inf", mask: set[int] = everything, busy: str = "0") -> list[int]:
        out = subprocess.run([*launch, sys.executable, "-c", PRINT_CORES, quota, busy], capture_output=True, text=True,
                             timeout=120, env=child_env(), preexec_fn=lambda: os.sched_setaffinity(0, mask))
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)

    assert cores(mpiexec(), "-n", "1") == [len(everything)]
    assert cores(mpiexec(), "-n", "2") == [len(everything) // 2] * 2
    assert cores(mpiexec(), "-n", "2", mask=one_core) == [1, 1]  # a cpuset of one core, shared
    assert cores(mask=one_core) == [1]
    assert cores(mpiexec(), "-n", "1", quota="1.5") == [1]  # a CPU-limited container: its quota, not its mask
    assert cores(mpiexec(), "-n", "1", busy=str(len(everything) - 1)) == [1]  # another job keeps the others busy


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


STAT = "cpu  9 9 9 9 9 0 0 0 0 0\ncpu0 {0} 0 0 {1} 0 0 0 0 0 0\ncpu1 {2} 0 0 {3} 0 0 0 0 0 0\nintr 5\n"


def test_busy_cpus_is_the_busy_share_of_the_given_cpus_over_the_window(tmp_path: Path, monkeypatch) -> None:
    from edgempi.host import machine

    stat = tmp_path / "stat"
    stat.write_text(STAT.format(100, 100, 100, 100))
    monkeypatch.setattr(machine.time, "sleep", lambda s: stat.write_text(STAT.format(190, 110, 150, 150)))
    assert machine.busy_cpus({0, 1}, stat=stat) == pytest.approx(2 * 140 / 200)
    stat.write_text(STAT.format(100, 100, 100, 100))
    assert machine.busy_cpus({0}, stat=stat) == pytest.approx(0.9)
    assert machine.busy_cpus({0}, stat=tmp_path / "missing") == 0.0


@pytest.mark.parametrize("proc, files, expected", [
    ("0::/job\n", {"fs/cgroup.controllers": "memory", "fs/job/memory.max": "3000000000",
                   "fs/job/memory.current": "1000000000"}, (2e9, "the memory limit of cgroup fs/job")),
    ("4:memory:/job\n", {"fs/memory/job/memory.limit_in_bytes": "9223372036854771712",
                         "fs/memory/job/memory.usage_in_bytes": "5", "fs/memory/memory.limit_in_bytes": "1500",
                         "fs/memory/memory.usage_in_bytes": "500"}, (1000, "the memory limit of cgroup fs/memory")),
    ("4:memory:/job\n", {"fs/memory/job/memory.limit_in_bytes": "9223372036854771712",
                         "fs/memory/job/memory.usage_in_bytes": "5"},
     (8000000 * 1024, "MemAvailable in /proc/meminfo")),
])
def test_available_memory_is_the_tightest_of_meminfo_and_the_cgroups(tmp_path: Path, proc: str, files: dict,
                                                                     expected) -> None:
    from edgempi.host.machine import available_memory

    cgroup_files(tmp_path, {"proc": proc, "meminfo": "MemTotal: 9000000 kB\nMemAvailable: 8000000 kB\n", **files})
    free, source = available_memory(tmp_path / "meminfo", tmp_path / "proc", tmp_path / "fs")
    assert (free, source.replace(f"{tmp_path}/", "")) == expected


@pytest.mark.parametrize("overrides, key, part", [
    (["parallel.devices_per_rank=1000", "algorithm.name=fedavg", "algorithm.local_steps=2"],
     "parallel.devices_per_rank", "1000 device(s) per rank 494 MB"),
    (["train.batch_size=100000"], "train.batch_size", "activations of a batch of 100000 5.84 GB"),
    (["train.optimizer=adam"], "model.name", "model of 61,706 values with gradient and optimizer state 987 kB"),
])
def test_a_run_beyond_the_nodes_memory_is_refused_with_the_estimate(monkeypatch, overrides, key, part) -> None:
    from helpers import small_config

    from edgempi.config import from_dict
    from edgempi.host import footprint

    monkeypatch.setattr(footprint, "available_memory", lambda: (100_000, "MemAvailable in /proc/meminfo"))
    refusal = footprint.refusal(from_dict(small_config(), overrides), 2, 2)
    assert refusal.startswith(f"{key}: the run needs at least ") and part in refusal
    assert refusal.endswith("but 100 kB is available (MemAvailable in /proc/meminfo)")
    monkeypatch.setattr(footprint, "available_memory", lambda: (1e15, "MemAvailable in /proc/meminfo"))
    assert footprint.refusal(from_dict(small_config(), overrides), 2, 2) is None


def test_a_cohort_is_estimated_by_its_rows_not_its_population(monkeypatch) -> None:
    """100,000 devices with a cohort of 100 on 2 ranks hold 50 rows a rank: 24.7 MB, not 24.7 GB."""
    from helpers import small_config

    from edgempi.config import from_dict
    from edgempi.host import footprint

    cfg = from_dict(small_config(), ["parallel.devices_per_rank=50000", "algorithm.name=fedavg",
                                     "algorithm.local_steps=2", "algorithm.cohort=100"])
    assert footprint.estimate(cfg, 2).rows == 50
    monkeypatch.setattr(footprint, "available_memory", lambda: (200_000_000, "MemAvailable in /proc/meminfo"))
    assert footprint.refusal(cfg, 2, 2) is None
    monkeypatch.setattr(footprint, "available_memory", lambda: (100_000, "MemAvailable in /proc/meminfo"))
    assert footprint.refusal(cfg, 2, 2).startswith("algorithm.cohort: ") and "50 device(s) per rank" in \
        footprint.refusal(cfg, 2, 2)


def test_threads_beyond_the_machine_are_refused_by_validate() -> None:
    from helpers import small_config

    from edgempi.config import ConfigError, from_dict

    with pytest.raises(ConfigError, match=r"^train.threads: must be <= 4096, more cores than a node has"):
        from_dict(small_config(), ["train.threads=100000"])


@pytest.mark.parametrize("override, message", [
    (f"train.threads={len(os.sched_getaffinity(0)) + 1}", "threads per rank, but this node has"),
    ("parallel.devices_per_rank=10000000", "parallel.devices_per_rank: the run needs at least"),
])
def test_run_refuses_what_the_node_cannot_give_in_one_line_before_any_file(tmp_path: Path, override: str,
                                                                           message: str) -> None:
    from helpers import edgempi, small_config, write_config

    config = write_config(tmp_path / "c.yaml", small_config(algorithm={"name": "fedavg", "local_steps": 2}))
    proc = edgempi("run", str(config), "--out", str(tmp_path / "out"), "--set", override, timeout=120)
    assert proc.returncode == 2, proc.stderr
    (line,) = proc.stderr.splitlines()
    assert line.startswith("edgempi: ") and message in line
    assert not (tmp_path / "out").exists()
