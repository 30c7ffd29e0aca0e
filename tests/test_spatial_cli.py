"""``parallel.mode: spatial`` from the command line, as a user runs it."""
from __future__ import annotations

import json
import re

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
        planned = re.search(r"groups (\[\[.*?\]\])", proc.stderr).group(1)
        assert json.loads(f.attrs["spatial_groups"]) == json.loads(planned)  # what auto chose, recorded
    info = edgempi("info", proc.stdout.strip().splitlines()[-1])
    assert f"spatial layer groups: {planned}" in info.stdout


def test_a_resumed_auto_run_keeps_the_groups_its_file_records(tmp_path):
    """groups: auto plans from layer timings measured at start; a resumed run must not plan
    anew (other timings, maybe other groups), but train with the groups it started with."""
    args = ["run", CONFIG, "--out", str(tmp_path), "--set", "train.steps=4", "--set", "train.eval_every=2",
            "--set", "train.log_every=2", "--set", "checkpoint.every_steps=2"]
    first = edgempi(*args, "--keep-checkpoints", ranks=2, timeout=300)
    assert first.returncode == 0, first.stderr
    path = first.stdout.strip().splitlines()[-1]
    with h5py.File(path, "r+") as f:  # as if stopped after its checkpoint at step 2, with other groups
        other = [[0, 13]] if json.loads(f.attrs["spatial_groups"]) != [[0, 13]] else [[0, 6], [7, 13]]
        f.attrs.update({"status": "interrupted", "spatial_groups": json.dumps(other)})
    resumed = edgempi(*args, "--resume", ranks=2, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert "spatial plan" not in resumed.stderr  # the recorded groups, not a new plan
    with h5py.File(path, "r") as f:
        assert f.attrs["status"] == "completed" and json.loads(f.attrs["spatial_groups"]) == other
        assert list(f["steps"]["step"][()])[-1] == 4


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
