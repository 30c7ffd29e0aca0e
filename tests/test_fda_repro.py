"""benchmarks/fda_repro.py as a user meets it: its help shows each example on its own lines, and a
table asked for where no run has finished says so instead of printing empty tables."""
from __future__ import annotations

import subprocess
import sys

from helpers import ROOT, child_env

SCRIPT = ROOT / "benchmarks" / "fda_repro.py"


def repro(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, env=child_env(),
                          timeout=120)


def test_help_keeps_the_continued_example_on_two_lines() -> None:
    proc = repro("--help")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    continued = next(i for i, line in enumerate(lines) if "mnist-grid.yaml" in line)
    assert lines[continued].rstrip().endswith("\\") and lines[continued + 1].lstrip().startswith("--out results/fda-mnist")


def test_table_only_without_results_says_so_and_fails(tmp_path) -> None:
    proc = repro("--devices", "4", "--table-only", "--out", str(tmp_path))
    assert proc.returncode == 1 and proc.stdout == ""
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("fda_repro: none of the ") and line.endswith(f"in {tmp_path}: run without --table-only first")
