"""Checkpoint and resume: a run stopped mid-way and resumed records exactly what an
uninterrupted run records (all but the clocks), in one continuous history."""
from __future__ import annotations

import json
import os
import signal

import numpy as np
import pytest
from helpers import edgempi, kill_job, launch, small_config, wait_for_checkpoint, wait_for_rows, write_config

from edgempi.record import open_for_reading

CLOCKS = {"wall_s", "sim_s", "compute_s", "comm_s"}


def tables(path) -> dict[str, dict[str, np.ndarray]]:
    with open_for_reading(path) as f:
        return {t: {c: f[t][c][()] for c in f[t] if c not in CLOCKS} for t in ("steps", "evals", "syncs")}


def assert_same_history(a, b):
    for table in a:
        assert a[table].keys() == b[table].keys()
        for col in a[table]:
            np.testing.assert_array_equal(a[table][col], b[table][col], err_msg=f"{table}/{col}")


@pytest.mark.parametrize("algorithm,extra", [
    ("large_batch", {}),
    ("fedavg", {}),  # scored on the held model of the last sync
    ("fedavg", {"train": {"eval_model": "average"}}),
    ("large_batch", {"compression": {"name": "topk", "ratio": 0.05}}),  # error feedback + DGC momentum
    ("fda", {"algorithm": {"variant": "linear", "theta": 0.05}}),  # w0 and xi
    ("dynamic", {"algorithm": {"delta": 0.05, "check_every": 2}}),
    ("dynamic", {"algorithm": {"delta": 0.02, "check_every": 2, "balancing": True},  # 8 devices: partial syncs
                 "parallel": {"devices_per_rank": 4}}),
    ("fedavg", {"parallel": {"devices_per_rank": 3}, "model": {"norm": "batch"}}),  # device banks, BN, momentum
    ("fedprox", {"algorithm": {"mu": 0.1}}),  # the round's anchor
    ("scaffold", {"algorithm": {"participation": 0.5}, "parallel": {"devices_per_rank": 2},  # control variates
                  "train": {"momentum": 0.0}}),
    ("fedavg", {"algorithm": {"cohort": 4, "server_optimizer": "adam"},  # a cohort of 4 of 8 resumed mid-round:
                "parallel": {"devices_per_rank": 4}}),  # the draw, the members' loaders, server state
    ("scaffold", {"algorithm": {"cohort": 4, "participation": 0.5}, "parallel": {"devices_per_rank": 4},
                  "train": {"momentum": 0.0}}),  # a cohort's cᵢ: the store of the sampled and the rows' holders
    ("large_batch", {"parallel": {"devices_per_rank": 2},  # stragglers: the deadline's step count is saved
                     "network": {"preset": "4g", "spread": 0.5, "step_ms": 20, "deadline_s": 0.2, "jitter": 0.5}}),
])
def test_killed_and_resumed_run_equals_uninterrupted_run(tmp_path, algorithm, extra):
    cfg = small_config(train={"steps": 120, "log_every": 5, "eval_every": 20, "optimizer": "sgd", "momentum": 0.9,
                              **extra.get("train", {})},
                       algorithm={"name": algorithm, "local_steps": 3, **extra.get("algorithm", {})},
                       checkpoint={"every_steps": 10},
                       **{k: v for k, v in extra.items() if k not in ("algorithm", "train")})
    config = write_config(tmp_path / "c.yaml", cfg)
    full = edgempi("run", str(config), "--out", str(tmp_path), "--set", "output.name=full", ranks=2)
    assert full.returncode == 0, full.stderr

    proc = launch(config, tmp_path, "cut")
    wait_for_checkpoint(tmp_path / "cut.ckpt", proc, 40)
    kill_job(proc)
    resumed = edgempi("run", str(config), "--out", str(tmp_path), "--set", "output.name=cut", "--resume", ranks=2)
    assert resumed.returncode == 0, resumed.stderr
    assert_same_history(tables(tmp_path / "full.h5"), tables(tmp_path / "cut.h5"))
    with open_for_reading(tmp_path / "cut.h5") as f:
        assert f.attrs["status"] == "completed" and "resumed" in f.attrs


def test_sigterm_saves_a_checkpoint_and_stops(tmp_path):
    cfg = small_config(train={"steps": 100000, "log_every": 5})
    config = write_config(tmp_path / "c.yaml", cfg)
    proc = launch(config, tmp_path, "term")
    wait_for_rows(tmp_path / "term.h5", "steps", 2, proc)  # both ranks train: their handlers are set
    os.killpg(proc.pid, signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode != 0
    assert "continue with edgempi run --resume" in err
    meta = json.loads((tmp_path / "term.ckpt" / "meta.json").read_text())
    with open_for_reading(tmp_path / "term.h5") as f:
        assert f.attrs["status"] == "interrupted"
        assert f["steps"]["step"][-1] == meta["step"]


def test_mismatched_or_corrupt_checkpoint_is_refused(tmp_path):
    cfg = small_config(train={"steps": 40, "log_every": 5}, checkpoint={"every_steps": 10})
    config = write_config(tmp_path / "c.yaml", cfg)
    proc = launch(config, tmp_path, "x")
    wait_for_checkpoint(tmp_path / "x.ckpt", proc, 10)
    kill_job(proc)
    before = (tmp_path / "x.h5").read_bytes()
    other = edgempi("run", str(config), "--out", str(tmp_path), "--set", "output.name=x", "--set", "train.lr=0.5",
                    "--resume", ranks=2)
    assert other.returncode == 2 and "written by a different config" in other.stderr
    assert len(other.stderr.strip().splitlines()) == 1
    meta = json.loads((tmp_path / "x.ckpt" / "meta.json").read_text())
    (tmp_path / "x.ckpt" / f"rank1-step{meta['step']}.pt").write_bytes(b"garbage")
    bad = edgempi("run", str(config), "--out", str(tmp_path), "--set", "output.name=x", "--resume", ranks=2)
    assert bad.returncode == 2 and "corrupt" in bad.stderr
    assert (tmp_path / "x.h5").read_bytes() == before  # nothing written by a refused resume


@pytest.mark.faults
def test_ctrl_c_leaves_a_resumable_checkpoint(tmp_path):
    """SIGINT to the launcher's process group, as Ctrl-C in a terminal sends it: the same as
    SIGTERM (checkpoint, status interrupted) with exit 130, and --resume says where it starts."""
    config = write_config(tmp_path / "c.yaml", small_config(train={"steps": 300, "log_every": 5}))
    proc = launch(config, tmp_path, "ctrl_c")
    wait_for_rows(tmp_path / "ctrl_c.h5", "steps", 2, proc)
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "edgempi: stopped by SIGINT at step" in err and "continue with edgempi run --resume" in err
    meta = json.loads((tmp_path / "ctrl_c.ckpt" / "meta.json").read_text())
    with open_for_reading(tmp_path / "ctrl_c.h5") as f:
        assert f.attrs["status"] == "interrupted" and f["steps"]["step"][-1] == meta["step"]
    resumed = edgempi("run", str(config), "--out", str(tmp_path), "--set", "output.name=ctrl_c", "--resume",
                      "--quiet", ranks=2)
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stderr.splitlines()[0] == f"edgempi: resuming from step {meta['step']}"
    with open_for_reading(tmp_path / "ctrl_c.h5") as f:
        assert f.attrs["status"] == "completed" and f["steps"]["step"][-1] == 300


def test_resume_without_a_checkpoint_says_it_starts_again(tmp_path):
    config = write_config(tmp_path / "c.yaml", small_config(train={"steps": 40, "log_every": 5}))
    proc = launch(config, tmp_path, "x")
    wait_for_rows(tmp_path / "x.h5", "steps", 1, proc)
    kill_job(proc)
    resumed = edgempi("run", str(config), "--out", str(tmp_path), "--set", "output.name=x", "--resume", "--quiet",
                      ranks=2)
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stderr.splitlines()[0] == "edgempi: no checkpoint: starting again from step 0"

