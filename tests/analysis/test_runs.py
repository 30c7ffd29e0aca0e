"""Reading results files: flattening, skipping bad files, following a file being written."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import h5py
import numpy as np
from runfiles import append, config, create, eval_curve, write_run

from edgempi.analysis import info, load_runs, tidy


def test_reads_tables_and_flattens_config(tmp_path: Path) -> None:
    write_run(tmp_path / "a.h5", config("fedavg", lr=0.1), eval_curve([0.5, 0.9]))
    (run,) = load_runs([tmp_path / "a.h5"])
    assert run.config["train.lr"] == 0.1
    assert run.config["algorithm.name"] == "fedavg"
    assert run.config["train.milestones"] == (2.0, 3.0)
    assert run.status == "completed" and run.value("world_size") == 4
    np.testing.assert_allclose(run.evals["test_acc"], [0.5, 0.9])
    assert len(run.steps["step"]) == 50
    assert run.partition.shape == (4, 10)


def test_directories_are_searched_recursively(tmp_path: Path) -> None:
    write_run(tmp_path / "x" / "deep" / "a.h5", evals=eval_curve([0.5]))
    write_run(tmp_path / "b.h5", evals=eval_curve([0.5]))
    (tmp_path / "notes.txt").write_text("not a run")
    runs = load_runs([tmp_path])
    assert sorted(r.name for r in runs) == ["a", "b"]


def test_bad_files_are_skipped_with_one_line_each(tmp_path: Path, capsys) -> None:
    good = write_run(tmp_path / "good.h5", evals=eval_curve([0.5, 0.6]))
    data = good.read_bytes()
    (tmp_path / "truncated.h5").write_bytes(data[: len(data) // 3])
    (tmp_path / "text.h5").write_text("hello")
    with h5py.File(tmp_path / "foreign.h5", "w") as f:
        f.attrs["schema"] = "other/2"
    with h5py.File(tmp_path / "bare.h5", "w") as f:
        f.create_dataset("x", data=[1, 2])
    runs = load_runs([tmp_path, tmp_path / "missing.h5"])
    assert [r.name for r in runs] == ["good"]
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 5, err
    assert all(line.startswith("edgempi: skipping ") for line in err)
    assert any("foreign.h5" in line and "not an edgempi results file" in line for line in err)


WRITER = textwrap.dedent("""
    import sys
    sys.path.insert(0, {helpers!r})
    from runfiles import append, config, create, eval_curve
    f = create({path!r}, config(), status="running")
    f.swmr_mode = True
    curve = eval_curve([0.1, 0.2, 0.3, 0.4, 0.5])
    append(f, "evals", {{k: v[:3] for k, v in curve.items()}})
    print("ready", flush=True)
    sys.stdin.readline()
    append(f, "evals", {{k: v[3:] for k, v in curve.items()}})
    print("more", flush=True)
    sys.stdin.readline()
    f.close()
""")


def test_follows_a_file_another_process_is_writing(tmp_path: Path) -> None:
    path = tmp_path / "live.h5"
    script = WRITER.format(helpers=str(Path(__file__).parent), path=str(path))
    writer = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True)
    try:
        assert writer.stdout.readline().strip() == "ready"
        (run,) = load_runs([path])
        assert run.status == "running"
        np.testing.assert_allclose(run.evals["test_acc"], [0.1, 0.2, 0.3])
        writer.stdin.write("go\n")
        writer.stdin.flush()
        assert writer.stdout.readline().strip() == "more"
        (run,) = load_runs([path])
        np.testing.assert_allclose(run.evals["test_acc"], [0.1, 0.2, 0.3, 0.4, 0.5])
        writer.stdin.write("go\n")
        writer.stdin.flush()
        assert writer.wait(timeout=30) == 0
    finally:
        writer.kill()
        writer.wait()


def test_ragged_columns_of_a_running_file_are_cut_to_whole_rows(tmp_path: Path) -> None:
    path = write_run(tmp_path / "r.h5", evals=eval_curve([0.1, 0.2]))
    with h5py.File(path, "r+") as f:  # a writer interrupted between two columns of row 3
        f["evals/step"].resize((3,))
    (run,) = load_runs([path])
    assert {len(v) for v in run.evals.values()} == {2}


def test_tidy_stacks_rows_with_config_columns(tmp_path: Path) -> None:
    write_run(tmp_path / "a.h5", config("fedavg", lr=0.1), eval_curve([0.5, 0.6]))
    write_run(tmp_path / "b.h5", config("large_batch", lr=0.2), eval_curve([0.7, 0.8, 0.9]))
    t = tidy(load_runs([tmp_path]), "evals")
    assert len(t["test_acc"]) == 5
    assert list(t["algorithm.name"]) == ["fedavg"] * 2 + ["large_batch"] * 3
    assert list(t["train.lr"]) == [0.1, 0.1, 0.2, 0.2, 0.2]
    assert t["train.milestones"][0] == (2.0, 3.0)


def test_info_summarises_one_file(tmp_path: Path) -> None:
    path = write_run(tmp_path / "a.h5", config("fedavg", lr=0.1), eval_curve([0.5, 0.875]), status="failed",
                     error="RuntimeError: boom")
    text = info(path)
    assert "failed" in text and "RuntimeError: boom" in text
    assert "fedavg: lenet5 on fashion-mnist" in text
    assert "lr=0.1" in text
    assert "test_acc 87.50%" in text
    assert "steps: 50 rows" in text


def test_truncated_file_of_a_killed_swmr_writer_is_skipped_not_waited_on(tmp_path: Path) -> None:
    """HDF5 retries reads past the end for ever in SWMR mode: this must be a warning, not a hang."""
    live = tmp_path / "live.h5"
    f = create(live, config(), status="running")
    f.swmr_mode = True
    append(f, "evals", eval_curve([0.1, 0.2, 0.3]))
    data = live.read_bytes()  # as a SIGKILLed writer leaves it: consistency flags still set
    f.close()
    (tmp_path / "cut.h5").write_bytes(data[: len(data) // 2])
    (tmp_path / "whole.h5").write_bytes(data)
    probe = ("import sys; from edgempi.analysis import load_runs; "
             f"print([r.name for r in load_runs([{str(tmp_path)!r}])])")
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "['live', 'whole']"
    assert "skipping" in out.stderr and "cut.h5" in out.stderr and "truncated" in out.stderr
