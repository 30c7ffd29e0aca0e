"""``parallel.mode: spatial`` from the command line, as a user runs it."""
from __future__ import annotations

import h5py

from helpers import ROOT, edgempi

CONFIG = str(ROOT / "benchmarks" / "configs" / "spatial.yaml")


def test_spatial_run_with_planned_groups(tmp_path):
    proc = edgempi("run", CONFIG, "--out", str(tmp_path), "--set", "train.steps=4", "--set", "train.eval_every=2",
                   ranks=2, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "edgempi: spatial plan:" in proc.stderr
    with h5py.File(proc.stdout.strip().splitlines()[-1], "r") as f:
        assert f.attrs["status"] == "completed"
        assert list(f["evals"]["step"][()]) == [0, 2, 4]
        assert f["steps"]["rounds"][-1] == 4  # one sum of the front's gradients per step


def test_tiles_smaller_than_the_halo_are_refused(tmp_path):
    proc = edgempi("run", CONFIG, "--out", str(tmp_path), "--set", "data.synthetic_side=16", "--set",
                   "parallel.layers=21", "--set", "parallel.groups=[[0, 20]]", ranks=2, timeout=300)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("edgempi: parallel.grid: column tiles"), proc.stderr
    assert not list(tmp_path.glob("*.h5"))


def test_grid_that_does_not_divide_the_ranks(tmp_path):
    proc = edgempi("run", CONFIG, "--out", str(tmp_path), ranks=3, timeout=300)
    assert proc.returncode == 2 and "needs a multiple of 2 ranks, the job has 3" in proc.stderr
