"""Fault injection: killed ranks, signals, damaged and foreign checkpoints, a checkpoint carrying
a payload, two writers of one file, a full disk, damaged results files. Each test asserts what
the user is promised: one line naming the file and the reason, the right exit code, nothing
lost or overwritten, and readers that answer in bounded time."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers import (
    ROOT,
    child_env,
    edgempi,
    kill_job,
    launch,
    small_config,
    wait_for_checkpoint,
    wait_for_rows,
    write_config,
)

from edgempi import sweep as sw
from edgempi.analysis.runs import read_run, read_status
from edgempi.checkpoint import _sealed

pytestmark = pytest.mark.faults
LONG = {"train": {"steps": 100000, "log_every": 5}, "checkpoint": {"every_steps": 10}}


def history(path: Path) -> dict[str, list[float]]:
    """Every column but the clocks (a resumed run's clocks differ by design)."""
    run = read_run(path)
    return {f"{t}/{c}": list(v) for t, cols in run.tables.items() for c, v in cols.items()
            if c not in ("wall_s", "sim_s", "compute_s", "comm_s")}


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("edgempi: ")]


def rank_pid(proc: subprocess.Popen, rank: int) -> int:
    """The pid of one rank of a launched job (from PMI_RANK in its environment)."""
    from helpers import _process_tree

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for pid in _process_tree(proc.pid):
            try:
                env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            except OSError:
                continue
            if f"PMI_RANK={rank}".encode() in env and b"python" in Path(f"/proc/{pid}/cmdline").read_bytes():
                return pid
        time.sleep(0.1)
    raise AssertionError(f"rank {rank} not found")


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> tuple[Path, Path]:
    """A config of 300 steps with checkpoints every 10, and its uninterrupted run: long enough
    that a signal sent after its third /steps row always lands mid-training."""
    folder = tmp_path_factory.mktemp("reference")
    config = write_config(folder / "c.yaml", small_config(train={"steps": 300, "log_every": 5, "eval_every": 50},
                                                         checkpoint={"every_steps": 10}))
    full = edgempi("run", str(config), "--out", str(folder), "--set", "output.name=full", "--quiet", ranks=2)
    assert full.returncode == 0, full.stderr
    return config, folder / "full.h5"


def test_killed_rank_then_resume_completes_the_same_history(reference, tmp_path):
    config, full = reference
    proc = launch(config, tmp_path, "cut", "--quiet")
    wait_for_checkpoint(tmp_path / "cut.ckpt", proc, 20)
    os.kill(rank_pid(proc, 1), signal.SIGKILL)  # one device dies; the launcher ends the job
    proc.communicate(timeout=120)
    kill_job(proc)
    assert proc.returncode != 0
    # Flushed rows readable, nothing claimed: "running" when the launcher killed rank 0 first,
    # "failed" when rank 0 saw its peer's death in a collective first and said so.
    assert read_run(tmp_path / "cut.h5").status in ("running", "failed")
    resumed = edgempi("run", str(config), "--out", str(tmp_path), "--set", "output.name=cut", "--resume", "--quiet",
                      ranks=2)
    assert resumed.returncode == 0, resumed.stderr
    assert read_run(tmp_path / "cut.h5").status == "completed"
    assert history(tmp_path / "cut.h5") == history(full)
    assert not (tmp_path / "cut.ckpt").exists() and not list(tmp_path.glob("*.lock"))


def test_sigterm_then_resume_completes_the_same_history(reference, tmp_path):
    config, full = reference
    proc = launch(config, tmp_path, "term", "--quiet")
    wait_for_rows(tmp_path / "term.h5", "steps", 3, proc)
    os.killpg(proc.pid, signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143 and "continue with edgempi run --resume" in err
    resumed = edgempi("run", str(config), "--out", str(tmp_path), "--set", "output.name=term", "--resume", "--quiet",
                      ranks=2)
    assert resumed.returncode == 0, resumed.stderr
    assert history(tmp_path / "term.h5") == history(full)
    again = edgempi("run", str(config), "--out", str(tmp_path), "--set", "output.name=term", "--resume", ranks=2)
    assert again.returncode == 0 and "completed already" in again.stderr
    assert history(tmp_path / "term.h5") == history(full)


@pytest.fixture
def stopped(tmp_path) -> tuple[Path, Path, Path]:
    """A run stopped by SIGKILL after its checkpoint of step 20 (config, results file, checkpoint folder)."""
    config = write_config(tmp_path / "c.yaml", small_config(**LONG))
    proc = launch(config, tmp_path, "x", "--quiet")
    wait_for_checkpoint(tmp_path / "x.ckpt", proc, 20)
    kill_job(proc)
    return config, tmp_path / "x.h5", tmp_path / "x.ckpt"


def resume(config: Path, out: Path, name: str = "x", ranks: int = 2) -> subprocess.CompletedProcess:
    return edgempi("run", str(config), "--out", str(out), "--set", f"output.name={name}", "--resume", "--quiet",
                   ranks=ranks)


def snapshot(*paths: Path) -> dict[str, bytes]:
    return {str(f): f.read_bytes() for p in paths for f in ([p] if p.is_file() else sorted(p.iterdir()))}


def assert_refused(proc: subprocess.CompletedProcess, *words: str) -> None:
    """Exit 2 with one line holding every word."""
    lines = error_lines(proc.stderr)
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert all(w in lines[0] for w in words), lines[0]


def reseal(folder: Path, rank: int, data: bytes) -> None:
    """Replace a rank file and fix meta.json's checksums, as a forger would."""
    import hashlib

    meta = json.loads((folder / "meta.json").read_text())
    entry = meta["files"][rank]
    (folder / entry["name"]).write_bytes(data)
    entry.update(bytes=len(data), sha256=hashlib.sha256(data).hexdigest())
    (folder / "meta.json").write_text(json.dumps(_sealed(meta)))


def test_damaged_checkpoint_is_refused_and_nothing_changes(stopped):
    config, h5, folder = stopped
    meta = json.loads((folder / "meta.json").read_text())
    rank1 = folder / meta["files"][1]["name"]
    data = bytearray(rank1.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one damaged byte deep inside a tensor: torch would load it
    rank1.write_bytes(bytes(data))
    before = snapshot(h5, folder)
    assert_refused(resume(config, h5.parent), str(rank1), "checksum")
    assert snapshot(h5, folder) == before
    (folder / "meta.json").write_text(json.dumps({**meta, "step": meta["step"] + 10}))
    assert_refused(resume(config, h5.parent), "meta.json", "corrupt")
    assert snapshot(h5, folder) == {**before, str(folder / "meta.json"): (folder / "meta.json").read_bytes()}


def test_foreign_checkpoints_are_refused(stopped, tmp_path):
    config, h5, folder = stopped
    meta = json.loads((folder / "meta.json").read_text())
    before = snapshot(h5, folder)
    assert_refused(resume(config, h5.parent, ranks=1), "written by 2 ranks, this job has 1")
    # Another run of the same config: its checkpoints do not belong to this file.
    other = launch(config, tmp_path, "y", "--quiet")
    wait_for_checkpoint(tmp_path / "y.ckpt", other, 10)
    kill_job(other)
    shutil.rmtree(tmp_path / "y.ckpt")
    shutil.copytree(folder, tmp_path / "y.ckpt")
    assert_refused(resume(config, tmp_path, "y"), "belongs to another run")
    # A rank file of an older step, passed off as the current one.
    reseal(folder, 0, torch_bytes({"step": meta["step"] - 10, "header": {}}))
    assert_refused(resume(config, h5.parent), "rank0", "holds step")
    assert snapshot(h5) == {str(h5): before[str(h5)]}


def torch_bytes(obj) -> bytes:
    import io

    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


class Payload:
    """What a malicious checkpoint carries: code that runs when the file is unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_checkpoint_with_a_payload_is_refused_unrun(stopped, tmp_path):
    config, h5, folder = stopped
    marker = tmp_path / "payload-ran"
    reseal(folder, 1, torch_bytes({"step": 20, "evil": Payload(marker)}))
    before = snapshot(h5)
    assert_refused(resume(config, h5.parent), "rank1", "not a checkpoint of plain data")
    assert not marker.exists() and snapshot(h5) == before


def test_second_writer_of_one_file_is_refused(tmp_path):
    config = write_config(tmp_path / "c.yaml", small_config(**LONG))
    first = launch(config, tmp_path, "same", "--quiet")
    try:
        wait_for_rows(tmp_path / "same.h5", "steps", 2, first)
        second = edgempi("run", str(config), "--out", str(tmp_path), "--set", "output.name=same", "--overwrite",
                         "--quiet", ranks=2, timeout=120)
        assert_refused(second, "same.h5 is being written by pid")
        assert first.poll() is None
        os.killpg(first.pid, signal.SIGTERM)
        first.communicate(timeout=120)
    finally:
        kill_job(first)
    run = read_run(tmp_path / "same.h5")
    assert run.status == "interrupted" and len(run.steps["step"]) >= 2
    assert not list(tmp_path.glob("*.lock"))


@pytest.fixture
def small_disk(tmp_path):
    """A 1.75 MiB tmpfs (root only): room for the results file, its 1 MiB reserve and one checkpoint
    (LeNet-5, two ranks: 0.5 MB), not two."""
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("mounting a small tmpfs needs root")
    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1792k", "tmpfs", str(disk)]).returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    yield disk
    subprocess.run(["umount", "-l", str(disk)])


def test_full_disk_stops_every_rank_with_one_line(small_disk):
    config = write_config(small_disk.parent / "c.yaml", small_config(**LONG))
    proc = edgempi("run", str(config), "--out", str(small_disk), "--set", "output.name=full", "--quiet", ranks=2,
                   timeout=300)
    lines = error_lines(proc.stderr)
    assert proc.returncode == 1 and len(lines) == 1, proc.stderr
    assert "No space left on device" in lines[0] and str(small_disk) in lines[0]
    assert "Traceback" not in proc.stderr and "BAD TERMINATION" not in proc.stdout + proc.stderr
    assert not [p for p in small_disk.rglob("*") if p.name.endswith((".tmp", ".lock"))]
    run = read_run(small_disk / "full.h5")
    assert run.status == "failed" and "No space left on device" in run.attrs["error"]
    assert len(run.steps["step"]) >= 2


def test_results_writer_stops_cleanly_before_hdf5_meets_a_full_disk(small_disk):
    """HDF5 crashes (SIGSEGV) if a SWMR flush meets a full disk: the writer must stop first,
    while the file can still be closed with status failed (a 64 kB reserve instead of 1 MiB,
    so a few hundred rows fill it)."""
    script = f"""
import os
from pathlib import Path
from edgempi import record
record.RESERVE = 64 << 10
r = record.Recorder(Path({str(small_disk / 'r.h5')!r}), {{}}, {{"steps": record.STEP_COLUMNS}})
free = os.statvfs({str(small_disk)!r})
with open({str(small_disk / 'ballast')!r}, "wb") as f:  # the disk fills up to 40 kB
    f.write(b"x" * (free.f_bavail * free.f_frsize - (40 << 10)))
rows = 0
while r.error is None and rows < 100000:
    rows += 1
    r.append("steps", {{"step": rows}})
try:
    r.close("failed", r.error)
except record.OutputError as exc:
    print("close:", exc)
print(rows, r.error)
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                          env=child_env(), cwd=ROOT)
    assert proc.returncode == 0 and "No space left on device" in proc.stdout, proc.stderr
    assert "Traceback" not in proc.stderr
    run = read_run(small_disk / "r.h5")
    assert run.status == "failed" and len(run.steps["step"]) > 0
    assert list(run.steps["step"]) == [float(i + 1) for i in range(len(run.steps["step"]))]


@pytest.fixture(scope="module")
def killed_file(tmp_path_factory) -> Path:
    """The file of a run killed while writing: its writer's SWMR flags are still set."""
    folder = tmp_path_factory.mktemp("killed")
    proc = launch(write_config(folder / "c.yaml", small_config(train={"steps": 100000, "log_every": 2})), folder,
                  "live", "--quiet")
    try:
        wait_for_rows(folder / "live.h5", "steps", 30, proc)
    finally:
        kill_job(proc)
    return folder / "live.h5"


CLASSIFY = """
import json, sys, time
from edgempi.analysis.runs import RunReadError, read_run
out = []
for path in sys.argv[1:]:
    started = time.monotonic()
    try:
        read_run(path, timeout=5)  # a healthy read takes well under a second, a hang for ever
        outcome = "read"
    except RunReadError as exc:
        outcome = "timeout" if "no answer within" in str(exc) else "refused"
    out.append((path, outcome, time.monotonic() - started))
print(json.dumps(out))
"""


def test_damaged_results_files_are_read_within_a_time_limit(killed_file, tmp_path):
    """Damage at metadata addresses makes HDF5 retry for minutes; every read answers within
    its deadline, and a folder with a damaged file still reports the others. The reads run in
    a process without MPI, as the analysis commands do."""
    data = killed_file.read_bytes()
    damaged = []
    for offset in range(0, min(len(data), 16800), 1600):
        damaged.append(tmp_path / f"d{offset}.h5")
        damaged[-1].write_bytes(data[:offset] + os.urandom(16) + data[offset + 16:])
    proc = subprocess.run([sys.executable, "-c", CLASSIFY, *map(str, damaged)], capture_output=True, text=True,
                          timeout=300, env=child_env())
    assert proc.returncode == 0, proc.stderr
    outcomes = json.loads(proc.stdout)
    assert all(seconds < 15 for _, _, seconds in outcomes), outcomes
    hung = [Path(path) for path, outcome, _ in outcomes if outcome == "timeout"]
    assert hung, outcomes  # the test did meet the hang it guards against
    hung = hung[0]
    started = time.monotonic()
    # sweep --list / --task read the root status only: readable ("running") or "failed", in time
    assert sw.point_status(tmp_path, sw.Point(0, hung.stem, ())) in ("running", "failed")
    assert time.monotonic() - started < 60
    env = dict(child_env(), EDGEMPI_READ_TIMEOUT_S="5")
    info = subprocess.run([sys.executable, "-m", "edgempi", "info", str(hung)], capture_output=True, text=True,
                          timeout=60, env=env)
    assert info.returncode == 2 and info.stderr.strip() == f"edgempi: {hung}: no answer within 5 s (damaged metadata?)"
    folder = tmp_path / "runs"
    folder.mkdir()
    shutil.copy(killed_file, folder / "good.h5")
    shutil.copy(hung, folder / "bad.h5")
    report = subprocess.run([sys.executable, "-m", "edgempi", "report", str(folder), "--target", "0.01"],
                            capture_output=True, text=True, timeout=60, env=env)
    assert report.returncode == 0 and "good" in report.stdout, report.stderr
    assert report.stderr.strip() == f"edgempi: skipping {folder / 'bad.h5'}: no answer within 5 s (damaged metadata?)"


# -- a job always ends: signals and stalls (edgempi.watchdog) -------------------------------
PLUGINS = ROOT / "tests" / "plugins"
GRACE = 3  # train.signal_grace_s of these tests; the job may take the abort's pause and a tick more
HANG = {"model": {"name": "faulty:hangs"}, "train": {"steps": 100000, "log_every": 5, "signal_grace_s": GRACE},
        "checkpoint": {"every_steps": 10}}  # rank 1 hangs in its 30th forward: step 27 (evaluations at 0, 10, 20)


def plugin_env() -> dict[str, str]:
    return dict(child_env(), PYTHONPATH=f"{ROOT}:{PLUGINS}")


def ended_by_watchdog(proc: subprocess.Popen, sent: float, code: int, *words: str) -> str:
    """The job ended soon after the grace, with exit ``code`` and one line holding ``words``."""
    try:
        out, err = proc.communicate(timeout=GRACE + 60)
    finally:
        kill_job(proc)
    assert time.monotonic() - sent < GRACE + 15, err
    lines = error_lines(err)
    assert proc.returncode == code and len(lines) == 1, err
    assert all(w in lines[0] for w in words), lines[0]
    assert "Traceback" not in err and "BAD TERMINATION" not in out + err
    return lines[0]


def assert_left_in_order(path: Path, status: str) -> None:
    """The results file readable with its final status, and no lock left."""
    assert read_run(path).status == status
    assert not list(path.parent.glob("*.lock"))


def test_sigterm_to_mpiexec_ends_a_job_whose_rank_is_stopped(tmp_path):
    config = write_config(tmp_path / "c.yaml", small_config(**{**LONG, "train": {**LONG["train"],
                                                                              "signal_grace_s": GRACE}}))
    proc = launch(config, tmp_path, "frozen", "--quiet")
    wait_for_checkpoint(tmp_path / "frozen.ckpt", proc, 10)
    os.kill(rank_pid(proc, 1), signal.SIGSTOP)  # a frozen device: it cannot even die of a signal
    time.sleep(1)
    sent = time.monotonic()
    os.kill(proc.pid, signal.SIGTERM)
    ended_by_watchdog(proc, sent, 143, "stopped by SIGTERM", f"train.signal_grace_s = {GRACE} s",
                      "rank 1 ", "did not answer", "frozen.h5 marked interrupted", "--resume continues from step")
    assert_left_in_order(tmp_path / "frozen.h5", "interrupted")


def test_sigterm_to_every_rank_ends_a_job_hung_in_a_plugin_model(tmp_path):
    """What Slurm sends: SIGTERM to mpiexec, its proxy and every rank, while rank 1 sits in its
    model's forward for ever and rank 0 waits for it in a collective; a checkpoint of step 20
    is there to resume from."""
    config = write_config(tmp_path / "c.yaml", small_config(**HANG))
    proc = launch(config, tmp_path, "hung", "--quiet", env=plugin_env())
    wait_for_rows(tmp_path / "hung.h5", "steps", 5, proc)
    time.sleep(1)  # rank 1 sits in the forward of step 27 by now, for ever
    from helpers import _process_tree

    sent = time.monotonic()
    for pid in _process_tree(proc.pid):
        os.kill(pid, signal.SIGTERM)
    ended_by_watchdog(proc, sent, 143, "stopped by SIGTERM", "rank 1 at step 26 (busy outside MPI) did not answer",
                      "hung.h5 marked interrupted", "edgempi run --resume continues from step 20")
    assert_left_in_order(tmp_path / "hung.h5", "interrupted")


def test_stalled_rank_is_found_without_a_signal(tmp_path):
    config = write_config(tmp_path / "c.yaml", small_config(**{**HANG, "train": {**HANG["train"],
                                                                              "stall_timeout_s": 4}}))
    proc = launch(config, tmp_path, "stall", "--quiet", env=plugin_env())
    wait_for_rows(tmp_path / "stall.h5", "steps", 5, proc)
    line = ended_by_watchdog(proc, time.monotonic(), 1, "no progress for 4 s (train.stall_timeout_s)",
                             "rank 1 at step 26 (busy outside MPI) did not arrive", "stall.h5 marked failed")
    assert "rank 0" not in line  # rank 0 waits in the collective: it is not to blame
    assert_left_in_order(tmp_path / "stall.h5", "failed")
    assert read_run(tmp_path / "stall.h5").attrs["error"] in line


def catches(pid: int, sig: int) -> bool:
    """Whether process ``pid`` has a handler for ``sig`` (SigCgt in /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigCgt:"):
            return bool(int(line.split()[1], 16) >> (sig - 1) & 1)
    return False


def test_signal_during_start_up_is_one_line(tmp_path):
    """SIGTERM as soon as the ranks can take it (their first moments: the imports and MPI's start
    follow): one line, no MPICH banner, nothing written."""
    config = write_config(tmp_path / "c.yaml", small_config(**LONG))
    proc = launch(config, tmp_path, "early", "--quiet")
    ranks = [rank_pid(proc, r) for r in (0, 1)]
    deadline = time.monotonic() + 30
    while not all(catches(pid, signal.SIGTERM) for pid in ranks):
        assert time.monotonic() < deadline, "the ranks never took SIGTERM"
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGTERM)
    try:
        out, err = proc.communicate(timeout=120)
    finally:
        kill_job(proc)
    assert proc.returncode == 143, err
    assert error_lines(err) == ["edgempi: stopped by SIGTERM before training started; nothing was written"], err
    assert "BAD TERMINATION" not in out + err
    assert not list(tmp_path.glob("*.h5")) and not list(tmp_path.glob("*.lock"))


def test_signals_after_the_last_row_leave_the_file_completed(tmp_path):
    """SIGTERM to every process of the job, again and again from the moment the file reads
    completed until the job is gone (its teardown, MPI's finalize): exit 0, file completed."""
    from helpers import _process_tree

    config = write_config(tmp_path / "c.yaml", small_config(train={"steps": 20, "log_every": 5}))
    proc = launch(config, tmp_path, "done", "--quiet")
    path = tmp_path / "done.h5"

    def completed() -> bool:
        try:
            return read_status(path, timeout=5) == "completed" if path.exists() else False
        except Exception:  # being written: not yet
            return False

    while not completed():
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.01)
    hits = 0
    while proc.poll() is None:
        for pid in _process_tree(proc.pid):
            try:
                os.kill(pid, signal.SIGTERM)
                hits += pid != proc.pid
            except ProcessLookupError:
                pass
        time.sleep(0.01)
    out, err = proc.communicate()
    assert hits, "the job ended before a signal reached it"
    assert proc.returncode == 0 and out.strip() == str(path), err
    assert "BAD TERMINATION" not in out + err and not error_lines(err), err
    assert_left_in_order(path, "completed")


def test_nan_at_an_evaluation_stops_the_run_before_it_is_recorded(tmp_path):
    config = write_config(tmp_path / "c.yaml", small_config(model={"name": "faulty:nan_eval"}))
    proc = subprocess.run([sys.executable, "-m", "edgempi", "run", str(config), "--out", str(tmp_path), "--set",
                           "output.name=nan", "--quiet"], capture_output=True, text=True, timeout=120,
                          env=plugin_env())
    assert proc.returncode == 1, proc.stderr  # (the first line warns of a single device)
    assert error_lines(proc.stderr)[-1] == "edgempi: the test loss became nan at step 0; lower train.lr"
    run = read_run(tmp_path / "nan.h5")
    assert run.status == "failed" and "TrainingError" in run.attrs["error"]
    assert len(run.evals["step"]) == 0
