"""What a user sees of a run: whole lines on one merged stream, the results path last, the
one-rank warning, --quiet, and a file name that does not depend on the output folder."""
from __future__ import annotations

import re
import subprocess
import sys

import numpy as np
from helpers import child_env, edgempi, mpiexec, small_config, write_config

from edgempi.config import from_dict
from edgempi.record import open_for_reading
from edgempi.runner import results_path


def merged(*args: str, ranks: int | None = None) -> tuple[int, list[str]]:
    """Run ``[mpiexec -n ranks] edgempi args`` with stdout and stderr in one pipe, unbuffered
    as in a Slurm log: the setting under which lines used to run together."""
    cmd = [sys.executable, "-m", "edgempi", *args]
    if ranks is not None:
        cmd = [mpiexec(), "-n", str(ranks), *cmd]
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=300,
                          env={**child_env(), "PYTHONUNBUFFERED": "1"})
    return proc.returncode, proc.stdout.splitlines()


def test_merged_output_has_whole_lines_and_the_path_last(tmp_path) -> None:
    config = write_config(tmp_path / "c.yaml", small_config(train={"steps": 20, "eval_every": 10}))
    code, lines = merged("run", str(config), "--out", str(tmp_path), ranks=2)
    assert code == 0, lines
    *progress, path = lines
    assert path.startswith(str(tmp_path)) and path.endswith(".h5"), lines
    assert [line.split(",")[0] for line in progress] == ["edgempi: step 0/20 (0%)", "edgempi: step 10/20 (50%)",
                                                         "edgempi: step 20/20 (100%)"], lines
    assert all(re.search(r", total [0-9.]+ [kMGT]?B$", line) for line in progress), lines  # nothing glued on
    assert not any("warning" in line for line in lines)


def test_one_rank_run_of_a_multi_device_method_warns_once(tmp_path) -> None:
    config = write_config(tmp_path / "c.yaml", small_config(train={"steps": 4, "eval_every": 4}))
    code, lines = merged("run", str(config), "--out", str(tmp_path), "--quiet")
    assert code == 0, lines
    warning, path = lines  # --quiet: no progress, the warning and the path only
    assert warning.startswith("edgempi: warning: large_batch is running as a single device") and "mpiexec" in warning
    assert path.endswith(".h5")
    code, lines = merged("run", str(config), "--out", str(tmp_path), "--quiet", "--set", "algorithm.name=centralized")
    assert code == 0 and len(lines) == 1, lines  # the reference method runs on one rank by design


def test_sweep_task_shows_its_point_and_progress(tmp_path) -> None:
    sweep = tmp_path / "s.yaml"
    sweep.write_text(f"name: s\nbase: {tmp_path / 'c.yaml'}\nranks: 2\ngrid:\n  train.lr: [0.05]\n")
    write_config(tmp_path / "c.yaml", small_config(train={"steps": 10, "eval_every": 10}))
    code, lines = merged("sweep", str(sweep), "--task", "0", "--out", str(tmp_path), ranks=2)
    assert code == 0, lines
    assert lines[0].startswith("edgempi: point 0 (ranks-2_lr-0.05-") and lines[0].endswith("train.lr=0.05")
    assert lines[-2].startswith("edgempi: step 10/10 (100%)") and lines[-1].endswith(".h5")


def test_default_file_name_does_not_depend_on_the_output_folder() -> None:
    cfg = small_config()
    here, there = (from_dict(cfg, [f"output.dir={d}"]) for d in ("results", "/elsewhere/runs"))
    assert results_path(here, "c").name == results_path(there, "c").name
    assert results_path(there, "c").parent.as_posix() == "/elsewhere/runs"
    changed = from_dict(cfg, ["train.lr=0.5"])
    assert results_path(changed, "c").name != results_path(here, "c").name


def test_run_stops_at_the_first_evaluation_that_reaches_stop_at_acc(tmp_path) -> None:
    """train.stop_at_acc: the run ends (completed) at the first evaluation at or above the target,
    with its last /steps row at that step, and a full run's history up to there."""
    config = write_config(tmp_path / "c.yaml", small_config(train={"steps": 200, "eval_every": 10, "log_every": 7}))
    full = edgempi("run", str(config), "--quiet", "--out", str(tmp_path), "--set", "output.name=full.h5", ranks=2)
    assert full.returncode == 0, full.stderr
    with open_for_reading(tmp_path / "full.h5") as f:
        acc, steps = f["evals/test_acc"][()], f["evals/step"][()]
        full_rows = f["steps/step"][()]
    target = float(np.sort(acc)[len(acc) // 2])  # reached part-way, not at the first evaluation
    first = int(np.flatnonzero(acc >= target)[0])
    assert 0 < first < len(acc) - 1
    stopped = edgempi("run", str(config), "--quiet", "--out", str(tmp_path), "--set", "output.name=stop.h5",
                      "--set", f"train.stop_at_acc={target}", ranks=2)
    assert stopped.returncode == 0, stopped.stderr
    with open_for_reading(tmp_path / "stop.h5") as f:
        assert f.attrs["status"] == "completed"
        np.testing.assert_array_equal(f["evals/test_acc"][()], acc[:first + 1])
        rows = f["steps/step"][()]
    assert rows[-1] == steps[first]
    np.testing.assert_array_equal(rows[:-1], full_rows[full_rows < steps[first]])


def test_a_target_first_reached_at_the_last_step_ends_the_run_completed(tmp_path) -> None:
    """The last step is logged (it ends the run) though not a multiple of log_every; reaching
    train.stop_at_acc there must not log it a second time, over no steps (a NaN loss, "failed")."""
    config = write_config(tmp_path / "c.yaml", small_config(train={"steps": 12, "eval_every": 12, "log_every": 5,
                                                                    "stop_at_acc": 0.01}))
    run = edgempi("run", str(config), "--quiet", "--out", str(tmp_path), "--set", "output.name=last.h5", ranks=2)
    assert run.returncode == 0, run.stderr
    with open_for_reading(tmp_path / "last.h5") as f:
        assert f.attrs["status"] == "completed"
        np.testing.assert_array_equal(f["steps/step"][()], [5, 10, 12])
        assert np.isfinite(f["steps/train_loss"][()]).all()
