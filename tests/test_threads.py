"""Torch threads per rank follow the cores a rank may use, not the machine's core count."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from helpers import child_env, mpiexec

PRINT_CORES = ("from mpi4py import MPI\nfrom edgempi.comm import Comm\n"
               "cores = MPI.COMM_WORLD.gather(Comm().cores_per_rank())\n"
               "if MPI.COMM_WORLD.rank == 0: print(cores)\n")


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two usable cores")
def test_cores_per_rank_follow_the_affinity_mask_shared_by_the_ranks_of_a_node():
    core = min(os.sched_getaffinity(0))

    def cores(*launch: str) -> list[int]:
        out = subprocess.run([*launch, sys.executable, "-c", PRINT_CORES], capture_output=True, text=True,
                             timeout=120, env=child_env())
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)

    everything = len(os.sched_getaffinity(0))
    assert cores(mpiexec(), "-n", "1") == [everything]
    assert cores(mpiexec(), "-n", "2") == [everything // 2] * 2
    assert cores(mpiexec(), "-n", "2", "taskset", "-c", str(core)) == [1, 1]  # a cpuset of one core, shared
    assert cores("taskset", "-c", str(core)) == [1]
