"""Failures end the whole job quickly, and the results file tells what happened."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import h5py
from helpers import ROOT, child_env, kill_job, launch, mpiexec, small_config, wait_for_rows, write_config

from edgempi.analysis.runs import read_run
from edgempi.record import open_for_reading


def test_exception_on_rank_2_of_4_aborts_the_job_quickly(tmp_path):
    """The other ranks wait in a collective for rank 2: the job must end soon after its fault
    (timed from the fault, not from start-up, which under load takes as long as it takes)."""
    path = write_config(tmp_path / "c.yaml", small_config(train={"steps": 100000}))
    fault = tmp_path / "fault-time"
    proc = subprocess.run([mpiexec(), "-n", "4", sys.executable, str(ROOT / "tests" / "fail_on_rank.py"), "2", "3",
                           "run", str(path), "--out", str(tmp_path)], capture_output=True, text=True, timeout=120,
                          env=dict(child_env(), FAULT_TIME_FILE=str(fault)))
    assert time.time() - float(fault.read_text()) < 20
    assert proc.returncode != 0
    assert "edgempi: rank 2: RuntimeError: injected fault at step 3" in proc.stderr


def test_exception_on_rank_0_marks_the_file_failed(tmp_path):
    path = write_config(tmp_path / "c.yaml", small_config(train={"steps": 100000}))
    proc = subprocess.run([mpiexec(), "-n", "2", sys.executable, str(ROOT / "tests" / "fail_on_rank.py"), "0", "7",
                           "run", str(path), "--out", str(tmp_path)], capture_output=True, text=True, timeout=120,
                          env=child_env())
    assert proc.returncode != 0
    (h5,) = tmp_path.glob("*.h5")
    with h5py.File(h5, "r") as f:
        assert f.attrs["status"] == "failed"
        assert "injected fault" in f.attrs["error"]


def test_running_file_is_readable_and_survives_kill_9(tmp_path):
    cfg = small_config(train={"steps": 100000, "log_every": 2, "eval_every": 20})
    proc = launch(write_config(tmp_path / "c.yaml", cfg), tmp_path, "live")
    h5 = tmp_path / "live.h5"
    try:
        seen = wait_for_rows(h5, "steps", 5, proc)
        with open_for_reading(h5) as f:  # another process reads while rank 0 writes
            assert f.attrs["status"] == "running"
            steps = f["steps"]["step"][:]
            assert len(steps) >= 5 and list(steps[:3]) == [2, 4, 6]
        seen = wait_for_rows(h5, "steps", seen + 3, proc)
    finally:
        kill_job(proc)
    with open_for_reading(h5) as f:  # a killed SWMR writer leaves its flags set: read as SWMR
        lengths = {f["steps"][c].shape[0] for c in f["steps"]}
    assert max(lengths) - min(lengths) <= 1  # a kill inside an append leaves at most one partial row
    run = read_run(h5)  # the reader drops that partial row
    assert run.status == "running"
    n = min(lengths)
    assert n >= seen - 1 and {len(v) for v in run.steps.values()} == {n}
    assert list(run.steps["step"]) == [2.0 * (i + 1) for i in range(n)]


def test_run_that_ends_while_a_reader_has_its_file_open_records_its_final_status(tmp_path):
    """Watching a run (edgempi info, a live plot) must not break its end: rank 0 reopens the
    file to write the final status while the reader still holds it (an HDF5 file lock). The
    run is ended by SIGTERM while the reader is open, so the test does not race its length."""
    cfg = small_config(train={"steps": 100000, "log_every": 2, "eval_every": 200})
    proc = launch(write_config(tmp_path / "c.yaml", cfg), tmp_path, "watched")
    h5 = tmp_path / "watched.h5"
    try:
        wait_for_rows(h5, "steps", 2, proc)
        with open_for_reading(h5) as f:
            assert f.attrs["status"] == "running"
            os.killpg(proc.pid, signal.SIGTERM)
            _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            kill_job(proc)
    assert "continue with edgempi run --resume" in err
    with open_for_reading(h5) as f:
        assert f.attrs["status"] == "interrupted"


def test_existing_results_file_is_never_overwritten(tmp_path):
    path = write_config(tmp_path / "c.yaml", small_config(train={"steps": 4}))
    h5 = tmp_path / "keep.h5"
    h5.write_bytes(b"precious")
    proc = subprocess.run([sys.executable, "-m", "edgempi", "run", str(path), "--out", str(tmp_path), "--set",
                           "output.name=keep"], capture_output=True, text=True, timeout=120, env=child_env())
    assert proc.returncode == 2 and "exists; pass --overwrite" in proc.stderr
    assert h5.read_bytes() == b"precious"
    proc = subprocess.run([sys.executable, "-m", "edgempi", "run", str(path), "--out", str(tmp_path), "--set",
                           "output.name=keep", "--overwrite"], capture_output=True, text=True, timeout=120,
                          env=child_env())
    assert proc.returncode == 0, proc.stderr
    with h5py.File(h5, "r") as f:
        assert f.attrs["status"] == "completed"


def test_diverging_loss_stops_the_run_as_failed(tmp_path):
    path = write_config(tmp_path / "c.yaml", small_config(train={"steps": 200, "lr": 1e12, "log_every": 5}))
    proc = subprocess.run([mpiexec(), "-n", "2", sys.executable, "-m", "edgempi", "run", str(path), "--out",
                           str(tmp_path), "--set", "output.name=nan"], capture_output=True, text=True, timeout=120,
                          env=child_env())
    assert proc.returncode == 1
    errors = [line for line in proc.stderr.splitlines() if "loss" in line and "step 0/" not in line]
    assert errors == ["edgempi: the training loss became nan by step 5; lower train.lr"], proc.stderr
    with h5py.File(tmp_path / "nan.h5", "r") as f:
        assert f.attrs["status"] == "failed" and "TrainingError" in f.attrs["error"]
