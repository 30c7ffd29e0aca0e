"""Files never follow a planted link: the lock, the checkpoint's files and every temporary file
are created by the run itself (O_EXCL, O_NOFOLLOW), never opened through a symbolic link and
never truncated; a link where the run must create a file is a one-line refusal, and the file
it points to keeps every byte."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
from helpers import edgempi, small_config, write_config

from edgempi.checkpoint import _commit_meta, _write_rank_file, remove
from edgempi.record import OutputError, OutputLock, Recorder

PRECIOUS = b"years of work\n"


@pytest.fixture
def victim(tmp_path: Path) -> Path:
    path = tmp_path / "elsewhere" / "thesis.txt"
    path.parent.mkdir()
    path.write_bytes(PRECIOUS)
    return path


def test_a_link_planted_at_the_lock_is_refused_in_one_line(tmp_path: Path, victim: Path) -> None:
    results = tmp_path / "out" / "run.h5"
    results.parent.mkdir()
    Path(f"{results}.lock").symlink_to(victim)
    with pytest.raises(OutputError) as info:
        OutputLock(results)
    assert str(info.value) == (f"{results}.lock is a symbolic link; refusing to write through it (remove it if "
                               "it is not yours)")
    assert victim.read_bytes() == PRECIOUS


def test_a_link_planted_at_the_results_file_is_refused(tmp_path: Path, victim: Path) -> None:
    results = tmp_path / "run.h5"
    results.symlink_to(victim)
    with pytest.raises(OutputError, match="run.h5 is a symbolic link; refusing to write through it"):
        OutputLock(results)
    assert victim.read_bytes() == PRECIOUS and not Path(f"{results}.lock").exists()


def test_a_leftover_lock_is_replaced_not_truncated(tmp_path: Path, victim: Path) -> None:
    """A killed run's lock file is replaced by a new one; a hard link to someone's file planted
    there loses its name only, never its bytes."""
    results = tmp_path / "run.h5"
    os.link(victim, f"{results}.lock")
    lock = OutputLock(results)
    assert victim.read_bytes() == PRECIOUS
    assert Path(f"{results}.lock").read_text().startswith("pid ") and os.stat(victim).st_nlink == 1
    lock.release()
    assert not Path(f"{results}.lock").exists()


@pytest.mark.parametrize("kind", ["dir", "fifo", "big"])
def test_something_else_at_the_lock_is_refused(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "run.h5.lock"
    if kind == "dir":
        path.mkdir()
    elif kind == "fifo":
        os.mkfifo(path)
    else:
        path.write_bytes(b"x" * 10_000)
    with pytest.raises(OutputError, match=r"run.h5.lock is not a lock file of edgempi; remove it if it is not yours"):
        OutputLock(tmp_path / "run.h5")
    assert path.exists()


def test_checkpoint_files_never_follow_a_link(tmp_path: Path, victim: Path) -> None:
    folder = tmp_path / "run.ckpt"
    folder.mkdir()
    (folder / "rank0-step5.tmp").symlink_to(victim)
    with pytest.raises(OSError, match="rank0-step5.tmp is a symbolic link; refusing to write through it"):
        _write_rank_file(folder / "rank0-step5.pt", {"step": 5})
    (folder / "meta.json.tmp").symlink_to(victim)
    assert "meta.json.tmp is a symbolic link; refusing to write through it" in _commit_meta(folder, {"step": 5})
    (folder / "rank0-step10.pt").symlink_to(victim)  # the rename replaces a link at the target itself
    assert _write_rank_file(folder / "rank0-step10.pt", {"step": 10})["name"] == "rank0-step10.pt"
    assert not (folder / "rank0-step10.pt").is_symlink()
    (folder / "rank0-step15.tmp").write_bytes(b"a killed save's leftover")
    _write_rank_file(folder / "rank0-step15.pt", {"step": 15})
    assert not (folder / "rank0-step15.tmp").exists()
    assert victim.read_bytes() == PRECIOUS


def test_a_checkpoint_folder_that_is_a_link_is_refused(tmp_path: Path, victim: Path) -> None:
    (tmp_path / "run.ckpt").symlink_to(victim.parent)
    with pytest.raises(OSError, match="run.ckpt is a symbolic link; refusing to write through it"):
        _write_rank_file(tmp_path / "run.ckpt" / "rank0-step5.pt", {"step": 5})
    assert remove(tmp_path / "run.ckpt").startswith(f"{tmp_path / 'run.ckpt'} is a symbolic link")
    assert victim.read_bytes() == PRECIOUS and sorted(os.listdir(victim.parent)) == ["thesis.txt"]


def test_resume_never_writes_through_a_planted_temporary_file(tmp_path: Path, victim: Path) -> None:
    results = tmp_path / "run.h5"
    recorder = Recorder(results, {"config": "{}"}, {"steps": ("step",), "evals": ("step",), "syncs": ("step",)})
    recorder.append("steps", {"step": 1.0})
    recorder.close("interrupted")
    results.with_suffix(".resume.tmp").symlink_to(victim)
    with pytest.raises(OutputError, match="run.resume.tmp is a symbolic link; refusing to write through it"):
        Recorder.resume(results, 1)
    assert victim.read_bytes() == PRECIOUS


def test_run_refuses_a_planted_lock_in_one_line_and_writes_nothing(tmp_path: Path, victim: Path) -> None:
    config = write_config(tmp_path / "c.yaml", small_config())
    out = tmp_path / "out"
    out.mkdir()
    (out / "run.h5.lock").symlink_to(victim)
    proc = edgempi("run", str(config), "--out", str(out), "--set", "output.name=run", timeout=180)
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [f"edgempi: {out}/run.h5.lock is a symbolic link; refusing to write through "
                                        "it (remove it if it is not yours)"]
    assert victim.read_bytes() == PRECIOUS and os.listdir(out) == ["run.h5.lock"]
