"""The local Slurm cluster for real: up, jobs, status, down, up again; and the sweep job array.

Skipped where Debian's slurmctld/slurmd are not installed. The cluster runs in the test's own
scratch folder on free ports, so a developer's cluster (or another test run) is untouched.
"""
from __future__ import annotations

import os
import random
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from helpers import edgempi, small_config
from test_resume import assert_same_history, tables

from edgempi.record import open_for_reading

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "slurm" / "local-cluster.sh"
TEMPLATE = ROOT / "slurm" / "sweep.sbatch"

pytestmark = pytest.mark.skipif(not all(shutil.which(t) for t in ("slurmctld", "slurmd", "sbatch", "squeue")),
                                reason="Slurm not installed (apt-get install slurmd slurmctld slurm-client)")

# `edgempi sweep` with a run_config that records the world size instead of training, so the
# template, srun/mpiexec and the world-size check are tested without the trainer.
STUB = '''
import argparse, sys
from pathlib import Path
from edgempi import sweep

def run_config(base, overrides, out_file):
    from mpi4py import MPI
    comm = MPI.COMM_WORLD
    if comm.rank == 0:
        out_file.parent.mkdir(parents=True, exist_ok=True)
        out_file.with_suffix(".txt").write_text(f"{comm.size} {' '.join(overrides)}\\n")

class WorldComm:  # what edgempi.comm.Comm offers the sweep runner, without importing torch
    def __init__(self):
        from mpi4py import MPI
        self.mpi = MPI.COMM_WORLD
        self.rank, self.size = self.mpi.Get_rank(), self.mpi.Get_size()

    def allgather_object(self, obj):
        return self.mpi.allgather(obj)


p = argparse.ArgumentParser()
sweep.add_arguments(p.add_subparsers().add_parser("sweep"))
try:
    sys.exit(sweep.command(p.parse_args(), run_config, WorldComm))
except sweep.SweepError as exc:
    print(f"edgempi: {exc}", file=sys.stderr)
    sys.exit(2)
'''


def free_port_pair() -> int:
    """A port p with p and p+1 free (slurmctld and slurmd), drawn below the kernel's ephemeral
    range: a port from bind(0) is free now, but any outgoing connection may take it before
    the daemons bind it."""
    low, high = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    below, above = range(10000, low - 1), range(high + 1, 65535)
    for port in random.Random().sample(below if len(below) >= len(above) else above, 50):
        try:
            with socket.socket() as a, socket.socket() as b:
                a.bind(("127.0.0.1", port))
                b.bind(("127.0.0.1", port + 1))
        except OSError:
            continue
        return port
    raise RuntimeError("no two consecutive free ports")


class Cluster:
    def __init__(self, scratch: Path) -> None:
        self.env = dict(os.environ, EDGEMPI_SLURM_DIR=str(scratch), EDGEMPI_SLURM_PORT=str(free_port_pair()),
                        EDGEMPI_SLURM_TIMEOUT="30", PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1",
                        PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")

    def script(self, action: str) -> subprocess.CompletedProcess:
        return subprocess.run(["bash", str(SCRIPT), action], capture_output=True, text=True, env=self.env, timeout=120)

    def up(self) -> subprocess.CompletedProcess:
        out = self.script("up")
        assert out.returncode == 0, out.stderr
        (line,) = out.stdout.strip().splitlines()
        assert line.startswith("export SLURM_CONF=")
        self.env["SLURM_CONF"] = line.split("=", 1)[1]
        return out

    def slurm(self, *args: str) -> str:
        out = subprocess.run(args, capture_output=True, text=True, env=self.env, timeout=30)
        assert out.returncode == 0, out.stderr
        return out.stdout

    def wait(self, job: str, timeout: float = 120) -> dict[str, str]:
        """Poll squeue until the job (every array task) has left the queue; its final states."""
        deadline = time.monotonic() + timeout
        while self.slurm("squeue", "-h", "-j", job).strip():
            assert time.monotonic() < deadline, f"job {job} still queued after {timeout}s"
            time.sleep(0.5)
        return {task: fields["JobState"] for task, fields in self.jobs(job).items()}

    def explain(self, submit_dir: Path) -> str:
        """What a failed job left behind: Slurm's own output files and the daemons' last lines."""
        parts = [f"{p.name}:\n{p.read_text()[-1500:]}" for p in sorted((submit_dir / "results" / "logs").glob("*.out"))]
        logs = Path(self.env["EDGEMPI_SLURM_DIR"]) / "log"
        parts += [f"{d}:\n" + "\n".join((logs / f"{d}.log").read_text().splitlines()[-25:])
                  for d in ("slurmctld", "slurmd") if (logs / f"{d}.log").exists()]
        return "\n".join(parts)

    def jobs(self, job: str) -> dict[str, dict[str, str]]:
        """``scontrol show job``'s fields of each task of the job (key: array task id, else job id)."""
        records = {}
        for line in self.slurm("scontrol", "-o", "show", "job", job).splitlines():
            fields = dict(f.split("=", 1) for f in line.split() if "=" in f)
            records[fields.get("ArrayTaskId", fields["JobId"])] = fields
        return records


@pytest.fixture
def cluster(tmp_path: Path):
    c = Cluster(tmp_path / "slurm state")  # a space in the path: Slurm's config files split values there
    try:
        yield c
    finally:
        c.script("down")


def test_up_job_status_down_up_again(cluster: Cluster, tmp_path: Path) -> None:
    cluster.up()
    assert "already up" in cluster.up().stderr  # idempotent
    job = cluster.slurm("sbatch", "--parsable", "-o", str(tmp_path / "job-%j.out"), "--wrap", "hostname").strip()
    assert cluster.wait(job) == {job: "COMPLETED"}
    assert (tmp_path / f"job-{job}.out").read_text().strip() == socket.gethostname().split(".")[0]

    status = cluster.script("status")
    assert status.returncode == 0 and "slurmctld: running" in status.stdout and "idle" in status.stdout
    pids = [int((tmp_path / "slurm state" / "run" / f"{d}.pid").read_text()) for d in ("slurmctld", "slurmd")]
    assert cluster.script("down").returncode == 0
    assert cluster.script("status").returncode == 1
    for pid in pids:  # gone, or a zombie nobody reaps: not running either way
        state = Path(f"/proc/{pid}/status")
        assert not state.exists() or "\nState:\tZ" in state.read_text()

    cluster.up()
    job = cluster.slurm("sbatch", "--parsable", "-n", "4", "-o", str(tmp_path / "job-%j.out"),
                        "--wrap", "srun --mpi=pmi2 hostname").strip()
    assert cluster.wait(job) == {job: "COMPLETED"}
    assert len((tmp_path / f"job-{job}.out").read_text().split()) == 4


def write_sweep(tmp_path: Path, ranks: int) -> Path:
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({"name": "arr", "base": {"seed": 0}, "grid": {"train.lr": [0.1, 0.2]},
                                    "ranks": ranks}))
    return path


@pytest.mark.parametrize("launcher", ["srun", "mpiexec"])
def test_sweep_array_trains_every_point_and_reports(cluster: Cluster, tmp_path: Path, launcher: str) -> None:
    """The real thing: edgempi trains 3 points as a 2-rank job array; report reads them all."""
    base = {"seed": 1, "data": {"name": "synthetic", "synthetic_train": 400, "synthetic_test": 100},
            "model": {"name": "lenet5"}, "train": {"steps": 20, "batch_size": 8, "eval_every": 10, "lr": 0.05}}
    sweep = tmp_path / "tiny.yaml"
    sweep.write_text(yaml.safe_dump({"name": "tiny", "base": base, "ranks": 2,
                                     "grid": {"algorithm.name": ["large_batch", "fedavg"]},
                                     "zip": {"algorithm.local_steps": [5]}, "seeds": [1, 2]}))
    count = subprocess.run([sys.executable, "-m", "edgempi", "sweep", str(sweep), "--count"], capture_output=True,
                           text=True, env=cluster.env, timeout=60)
    assert count.stdout.strip() == "4", count.stderr
    cluster.up()
    cluster.env.update(EDGEMPI=f"{sys.executable} -m edgempi", EDGEMPI_LAUNCHER=launcher)
    (tmp_path / "results" / "logs").mkdir(parents=True)  # as in a checkout
    job = cluster.slurm("sbatch", "--parsable", "--array=0-3", "-n", "2", "-D", str(tmp_path), str(TEMPLATE),
                        str(sweep)).strip()
    states = cluster.wait(job, timeout=400)
    logs = tmp_path / "results" / "tiny" / "logs"
    assert states == {str(i): "COMPLETED" for i in range(4)}, [p.read_text()[-2000:] for p in logs.glob("*.log")]
    assert not list(tmp_path.glob("slurm-*.out"))  # nothing in the submit folder
    slurm_files = sorted((tmp_path / "results" / "logs").glob(f"edgempi-sweep-{job}_*.out"))
    assert len(slurm_files) == 4 and "log in" in slurm_files[0].read_text()
    assert "edgempi: step 20/20 (100%)" in (logs / f"{job}_0.log").read_text()  # progress in every task's log
    files = sorted((tmp_path / "results" / "tiny").glob("*.h5"))
    assert len(files) == 4
    report = subprocess.run([sys.executable, "-m", "edgempi", "report", str(tmp_path / "results" / "tiny"),
                             "--target-acc", "0.05", "--format", "csv"], capture_output=True, text=True,
                            env=cluster.env, timeout=120)
    assert report.returncode == 0, report.stderr
    rows = [r for r in report.stdout.strip().splitlines()[1:] if r]
    assert len(rows) == 4 and sum("fedavg" in r for r in rows) == 2 and all("completed" in r for r in rows)


def test_sweep_task_with_wrong_world_size_fails(cluster: Cluster, tmp_path: Path) -> None:
    (tmp_path / "stub.py").write_text(STUB)
    sweep = write_sweep(tmp_path, ranks=4)
    cluster.up()
    cluster.env["EDGEMPI"] = f"{sys.executable} {tmp_path / 'stub.py'}"
    (tmp_path / "results" / "logs").mkdir(parents=True)
    job = cluster.slurm("sbatch", "--parsable", "--array=0", "-n", "2", "-D", str(tmp_path), str(TEMPLATE),
                        str(sweep)).strip()
    assert cluster.wait(job) == {"0": "FAILED"}
    log = (tmp_path / "results" / "arr" / "logs" / f"{job}_0.log").read_text()
    assert "needs 4 ranks but the job has 2" in log
    assert not list((tmp_path / "results" / "arr").glob("*.txt"))



def rows(path: Path, table: str) -> int:
    """Rows a (possibly running) results file has in ``table``; 0 while it cannot be read yet."""
    try:
        with open_for_reading(path) as f:
            return f[table]["step"].shape[0]
    except (OSError, KeyError):
        return 0


def poll(what: str, check, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"{what}: not after {timeout}s"
        time.sleep(0.2)


def test_task_stopped_before_its_time_limit_is_requeued_and_resumes(cluster: Cluster, tmp_path: Path) -> None:
    """SIGUSR1 to the batch script, as --signal=B:USR1@300 sends it five minutes before the time
    limit: the ranks checkpoint and stop, the script requeues the task, and the requeued task
    resumes and completes with the same history as a task that was never stopped."""
    base = small_config(train={"steps": 600, "eval_every": 100, "log_every": 5, "threads": 1})
    sweep = tmp_path / "pre.yaml"
    sweep.write_text(yaml.safe_dump({"name": "pre", "base": base, "ranks": 2, "grid": {"train.lr": [0.05]}}))
    reference = edgempi("sweep", str(sweep), "--task", "0", "--quiet", "--out", str(tmp_path / "ref"), ranks=2)
    assert reference.returncode == 0, reference.stderr
    (ref_file,) = (tmp_path / "ref" / "pre").glob("*.h5")

    cluster.up()
    cluster.env["EDGEMPI"] = f"{sys.executable} -m edgempi"
    (tmp_path / "results" / "logs").mkdir(parents=True)
    job = cluster.slurm("sbatch", "--parsable", "--array=0", "-n", "2", "-D", str(tmp_path), str(TEMPLATE),
                        str(sweep)).strip()
    path = tmp_path / "results" / "pre" / ref_file.name
    log = tmp_path / "results" / "pre" / "logs" / f"{job}_0.log"
    poll("two /steps rows: every rank trains, with its signal handlers set", lambda: rows(path, "steps") >= 2, 300)
    cluster.slurm("scancel", "--batch", "--signal=USR1", f"{job}_0")
    state = {}

    def stopped() -> bool:
        state.update(cluster.jobs(f"{job}_0")["0"])
        return state["Restarts"] == "1" and state["JobState"] == "PENDING" or state["JobState"] in ("COMPLETED",
                                                                                                   "FAILED")
    poll("requeued", stopped, 300)
    assert state["JobState"] == "PENDING", (state["JobState"], log.read_text()[-3000:])
    assert rows(path, "steps") < 600 / 5  # stopped part-way
    # Skip Slurm's requeue hold, but not by all of it: slurmd refuses a job whose credential was
    # made in the same second as its revocation at the end of the first start ("Job credential
    # revoked"; Slurm compares whole seconds), so the requeued task starts two seconds on.
    cluster.slurm("scontrol", "update", f"JobId={job}_0", "StartTime=now+2")
    assert cluster.wait(job, timeout=400) == {"0": "COMPLETED"}, log.read_text()[-3000:] + cluster.explain(tmp_path)

    text = log.read_text()
    assert "SIGUSR1: the ranks checkpoint and stop" in text and "requeueing job" in text
    assert "(start 2)" in text and "resuming from its checkpoint" in text
    with open_for_reading(path) as f:
        assert f.attrs["status"] == "completed" and "resumed" in f.attrs
    assert_same_history(tables(ref_file), tables(path))


# The Edgify job scaled down to run here: the 96 devices as 48 virtual devices on each of 2 ranks,
# synthetic 32×32 images (one channel: the synthetic set has no colour) instead of CIFAR-10,
# LeNet-5 instead of ResNet-18 (a ResNet-18 step of 96 devices takes about a minute on 2 cores),
# and 2 steps per method.
SMALL_EDGIFY = ("data.name=synthetic", "data.synthetic_side=32", "data.synthetic_train=3200",
                "data.synthetic_test=200", "model.name=lenet5", "train.epochs=null", "train.steps=2",
                "checkpoint.every_minutes=0")


def test_edgify_job_scaled_down_runs_end_to_end(cluster: Cluster, tmp_path: Path) -> None:
    """slurm/edgify-cifar10.sh: the centralized task on its own CPUs, the four 96-device methods
    as an array, then report and figures once both are done."""
    cluster.up()
    cluster.env["EDGEMPI"] = f"{sys.executable} -m edgempi"
    sets = [a for kv in SMALL_EDGIFY for a in ("--set", kv)]
    submit = subprocess.run(["bash", str(ROOT / "slurm" / "edgify-cifar10.sh"), "--ranks", "2", "--cpus", "2",
                             "--max-running", "1", "--target", "0.15", *sets], cwd=tmp_path, env=cluster.env,
                            capture_output=True, text=True, timeout=120)
    assert submit.returncode == 0, submit.stderr
    central, devices, report = submit.stdout.split()
    results = tmp_path / "results" / "edgify-cifar10"
    logs = lambda: {p.name: p.read_text()[-2000:] for p in (results / "logs").glob("*.log")}  # noqa: E731
    assert cluster.wait(report, timeout=900) == {report: "COMPLETED"}, logs()
    assert cluster.wait(central) == {"0": "COMPLETED"}, logs()
    assert cluster.wait(devices) == {str(i): "COMPLETED" for i in range(4)}, logs()

    asked = {**cluster.jobs(central), **{f"d{k}": v for k, v in cluster.jobs(devices).items()}}
    assert (asked["0"]["NumTasks"], asked["0"]["CPUs/Task"]) == ("1", "2")  # what its torch threads use
    assert all((asked[f"d{i}"]["NumTasks"], asked[f"d{i}"]["CPUs/Task"]) == ("2", "1") for i in range(4))
    runs = sorted(results.glob("*.h5"))
    assert len(runs) == 5
    with open_for_reading(runs[0]) as f:  # 96 devices on 2 ranks, or the centralized run
        assert (f.attrs["devices"], f.attrs["world_size"]) in ((96, 2), (1, 1))
    table = (results / "report.md").read_text()
    lines = [line for line in table.splitlines() if line.startswith("| ") and "completed" in line]
    assert len(lines) == 5 and {"centralized", "large_batch", "fedavg", "dynamic", "fda"} == {
        line.split("|")[2].strip() for line in lines}
    for x in ("epoch", "round", "bytes"):
        assert (results / f"accuracy-by-{x}.png").read_bytes()[:4] == b"\x89PNG"
    assert not list(tmp_path.glob("slurm-*.out")) and len(list((tmp_path / "results" / "logs").glob("*.out"))) == 6


def fake_daemon(pid_file: Path, conf: Path) -> subprocess.Popen:
    """A stand-in for slurmd, which deletes its pid file as it exits: this one, once told to
    stop, rewrites and deletes its pid file in a tight loop for two seconds, then exits 0."""
    code = (f"import os, signal, time\npid_file = {str(pid_file)!r}\n"
            "def stop(*_):\n"
            "    end = time.monotonic() + 2\n"
            "    while time.monotonic() < end:\n"
            "        with open(pid_file, 'w') as f: f.write(f'{os.getpid()}\\n')\n"
            "        time.sleep(0.0005)\n"
            "        try: os.unlink(pid_file)\n"
            "        except FileNotFoundError: pass\n"
            "        time.sleep(0.0005)\n"
            "    os._exit(0)\n"
            "signal.signal(signal.SIGTERM, stop)\n"
            "with open(pid_file + '.tmp', 'w') as f: f.write(f'{os.getpid()}\\n')\n"
            "os.replace(pid_file + '.tmp', pid_file)\n"  # never seen empty, as a daemon writes it
            "while True: time.sleep(0.05)\n")
    proc = subprocess.Popen([sys.executable, "-c", code, "slurmd", "-f", str(conf)])
    deadline = time.monotonic() + 30
    while not pid_file.exists():  # written once the daemon handles SIGTERM
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.05)
    return proc


def test_status_and_down_while_a_daemon_pid_file_comes_and_goes(tmp_path: Path) -> None:
    """`status` never crashes on a pid file that vanishes between two reads, and `down` waits
    for the daemon itself, not for its pid file, to be gone."""
    cluster = Cluster(tmp_path / "slurm")
    run = tmp_path / "slurm" / "run"
    run.mkdir(parents=True)
    pid_file, conf = run / "slurmd.pid", tmp_path / "slurm" / "slurm.conf"
    fake = fake_daemon(pid_file, conf)
    assert "slurmd: running" in cluster.script("status").stdout
    fake.terminate()
    for _ in range(15):  # the old script died on ~1 in 4 of these
        status = cluster.script("status")
        assert status.stderr == "" and "slurmd: " in status.stdout, status.stderr
    assert fake.wait(timeout=30) == 0

    fake = fake_daemon(pid_file, conf)
    down = cluster.script("down")
    assert down.returncode == 0 and "down" in down.stderr, down.stderr
    assert fake.poll() == 0, "down returned before the daemon had exited"  # its pid file came and went
    assert not pid_file.exists()
