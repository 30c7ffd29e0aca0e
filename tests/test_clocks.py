"""The clocks of a results file never run backwards: ``compute_s``, ``comm_s``, ``wall_s`` and
``sim_s`` are cumulative, so every row holds values >= 0 and >= those of the rows before it, in
/steps, in /evals, and across both in the order they were written.

Rows are written at every step (``log_every: 1``), so a row also falls inside a round: with
several devices per rank (the rank's collective seconds are one wait, however many devices it
holds), with stragglers cut at the deadline (a late device's work past it is not the round's),
and in spatial mode (tile exchanges inside forward and backward).
"""
from __future__ import annotations

import h5py
import numpy as np
import pytest
from helpers import ROOT, edgempi, small_config, write_config

CLOCKS = ("compute_s", "comm_s", "wall_s", "sim_s")
EVERY_STEP = {"steps": 24, "log_every": 1, "eval_every": 6}
STRAGGLERS = {"preset": "4g", "spread": 0.5, "compute_spread": 0.5, "step_ms": 40, "deadline_s": 0.5, "jitter": 0.5}
RUNS = {
    "large_batch_devices": small_config(train=EVERY_STEP, parallel={"devices_per_rank": 4}),
    "fedavg_devices": small_config(train=EVERY_STEP, algorithm={"name": "fedavg", "local_steps": 3},
                                   parallel={"devices_per_rank": 3}),
    "fedavg_stragglers": small_config(train=EVERY_STEP, algorithm={"name": "fedavg", "local_steps": 8},
                                      parallel={"devices_per_rank": 2}, network=STRAGGLERS),
    "large_batch_stragglers": small_config(train=EVERY_STEP, network={**STRAGGLERS, "deadline_s": 0.3}),
}


def clock_rows(path) -> list[tuple[str, dict[str, np.ndarray]]]:
    with h5py.File(path, "r") as f:
        return [(table, {c: f[table][c][()] for c in ("step", *CLOCKS) if c in f[table]})
                for table in ("steps", "evals")]


def assert_clocks_never_run_backwards(path) -> None:
    tables = clock_rows(path)
    for table, columns in tables:
        assert len(columns["step"]) > 1, table
        for name in CLOCKS:
            if name in columns:
                values = columns[name]
                assert (values >= 0).all(), (table, name, values)
                assert (np.diff(values) >= 0).all(), (table, name, values)
    # Both tables in the order they were written: at a step, its /steps row before its /evals row.
    (_, steps), (_, evals) = tables
    for name in ("wall_s", "sim_s"):
        rows = sorted([(s, 0, v) for s, v in zip(steps["step"], steps[name])]
                      + [(s, 1, v) for s, v in zip(evals["step"], evals[name])])
        merged = np.array([v for _, _, v in rows])
        assert (np.diff(merged) >= 0).all(), (name, rows)


@pytest.mark.parametrize("name", RUNS)
def test_clocks_never_run_backwards(tmp_path, name):
    config = write_config(tmp_path / "c.yaml", RUNS[name])
    proc = edgempi("run", str(config), "--out", str(tmp_path), "--set", f"output.name={name}", ranks=2)
    assert proc.returncode == 0, proc.stderr
    assert_clocks_never_run_backwards(tmp_path / f"{name}.h5")


def test_clocks_never_run_backwards_in_spatial_mode(tmp_path):
    proc = edgempi("run", str(ROOT / "benchmarks" / "configs" / "spatial.yaml"), "--out", str(tmp_path),
                   "--set", "train.steps=6", "--set", "train.log_every=1", "--set", "train.eval_every=3",
                   "--set", "data.synthetic_train=256", "--set", "data.synthetic_test=64",
                   "--set", "network.preset=wifi", "--set", "output.name=spatial", ranks=2)
    assert proc.returncode == 0, proc.stderr
    assert_clocks_never_run_backwards(tmp_path / "spatial.h5")
