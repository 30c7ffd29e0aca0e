"""Shared helpers: small configs, and running the CLI as a user would (also under mpiexec)."""
from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from edgempi.record import open_for_reading

ROOT = Path(__file__).resolve().parent.parent
BENCHMARKS = ROOT / "benchmarks"
FASHION = Path("/usr/share/datasets/fashion-mnist")


def load_script(path: Path):
    """A benchmark script (not a package module) imported from its file, to call its functions.
    It is registered in sys.modules first, as an import would, so its dataclasses can resolve, and
    benchmarks/ goes on the path, as when a script there runs, so it finds the benchmarks'
    helpers (launcher.py)."""
    if str(BENCHMARKS) not in sys.path:
        sys.path.insert(0, str(BENCHMARKS))
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def small_config(**sections) -> dict:
    """A config that trains in seconds: synthetic data, LeNet-5."""
    cfg = {
        "seed": 3,
        "data": {"name": "synthetic", "synthetic_train": 640, "synthetic_test": 200},
        "model": {"name": "lenet5"},
        "train": {"steps": 20, "batch_size": 8, "lr": 0.05, "eval_every": 10, "log_every": 5},
        "algorithm": {"name": "large_batch"},
    }
    for name, values in sections.items():
        if isinstance(values, dict):
            cfg.setdefault(name, {}).update(values)
        else:
            cfg[name] = values
    return cfg


def write_config(path: Path, cfg: dict) -> Path:
    path.write_text(yaml.safe_dump(cfg))
    return path


def self_comm():
    """A group of one device, for a reference run inside a test beside its peers' run."""
    from mpi4py import MPI

    from edgempi.comm import Comm

    return Comm(MPI.COMM_SELF)


def make_exchange(section: dict, comm, shapes, **kw):
    """The GradientExchange of a ``compression`` section written as a mapping, without error
    feedback unless it asks, built from its checked settings as a run builds its own."""
    from edgempi.compression import GradientExchange
    from edgempi.compression.registry import settings_of

    return GradientExchange.from_config(settings_of({"error_feedback": False, **section}), comm, shapes, **kw)


def mpiexec() -> str:
    exe = load_script(BENCHMARKS / "launcher.py").mpiexec()
    if exe is None:
        pytest.skip("no mpiexec on PATH")
    return exe


def child_env() -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    env.pop("PMI_RANK", None)
    return env


def edgempi(*args: str, ranks: int | None = None, timeout: float = 300, **kw) -> subprocess.CompletedProcess:
    """Run ``[mpiexec -n ranks] python -m edgempi args`` and capture its output."""
    cmd = [sys.executable, "-m", "edgempi", *args]
    if ranks is not None:
        cmd = [mpiexec(), "-n", str(ranks), *cmd]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=child_env(), **kw)


def launch(config: Path, out: Path, name: str, *extra: str, ranks: int = 2,
           env: dict[str, str] | None = None) -> subprocess.Popen:
    """Start ``mpiexec -n ranks edgempi run`` in the background, to be watched, signalled or killed."""
    return subprocess.Popen([mpiexec(), "-n", str(ranks), sys.executable, "-m", "edgempi", "run", str(config),
                             "--out", str(out), "--set", f"output.name={name}", *extra],
                            env=env or child_env(), start_new_session=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def wait_for_rows(path: Path, table: str, rows: int, proc: subprocess.Popen, timeout: float = 120) -> int:
    """Wait until a running job's file has ``rows`` rows in ``table``: proof every rank is training."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        if path.exists():
            try:
                with open_for_reading(path) as f:
                    n = f[table]["step"].shape[0]
                    if n >= rows:
                        return n
            except OSError:
                pass  # the writer has not switched to SWMR yet
        time.sleep(0.2)
    raise AssertionError(f"no {rows} rows in {path} after {timeout} s")


def wait_for_checkpoint(folder: Path, proc: subprocess.Popen, step_at_least: int, timeout: float = 120) -> int:
    """Wait until a running job has committed a checkpoint of at least that step; returns its step."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        meta = folder / "meta.json"
        if meta.exists():
            step = json.loads(meta.read_text())["step"]
            if step >= step_at_least:
                return step
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.1)
    raise AssertionError("no checkpoint written")


def _process_tree(root: int) -> list[int]:
    """``root`` and all its descendants, from the parent pids in /proc."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue  # the process ended while we looked
        children.setdefault(ppid, []).append(int(stat.parent.name))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, []))
    return tree


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def kill_job(proc: subprocess.Popen, timeout: float = 30) -> None:
    """SIGKILL a launched job and return once none of its processes can write any more.

    Hydra puts mpiexec, its proxy and every rank in sessions of their own, so killing
    mpiexec's group leaves the ranks to be killed by the proxy a moment later: a rank could
    still append to its files after ``proc.wait()``. Every process of the tree is killed here,
    remembered across rounds since a killed parent's children are handed to init.
    """
    deadline = time.monotonic() + timeout
    known: set[int] = set()
    while proc.returncode is None:  # a reaped mpiexec's pid may belong to someone else by now
        known.update(_process_tree(proc.pid))
        running = [pid for pid in known if _running(pid)]
        if not running:
            break
        assert time.monotonic() < deadline, f"processes {running} of the killed job still running"
        for pid in running:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.05)
    proc.wait(timeout=timeout)
