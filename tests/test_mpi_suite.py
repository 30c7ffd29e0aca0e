"""Runs every collective test (marked ``mpi``) under ``mpiexec -n 4``, so one pytest command runs all;
in the serial run pytest-mpi skips them.

A hang in a collective test would otherwise stall the whole suite; here it fails on a timeout
with the inner output attached.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from helpers import ROOT, child_env, mpiexec


def test_collective_suite_on_four_ranks():
    cmd = [mpiexec(), "-n", "4", sys.executable, "-m", "pytest", "--with-mpi", "-m", "mpi", "-q",
           str(Path(ROOT, "tests"))]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=child_env(), cwd=ROOT)
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"the MPI suite hung for 900 s:\n{exc.stdout}\n{exc.stderr}") from exc
    summary = [line for line in proc.stdout.splitlines() if " passed" in line or " failed" in line]
    assert proc.returncode == 0 and summary and "failed" not in summary[-1], proc.stdout[-6000:] + proc.stderr[-3000:]
    print(summary[-1])
