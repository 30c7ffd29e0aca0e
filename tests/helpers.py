"""Shared helpers: small configs, and running the CLI as a user would (also under mpiexec)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
FASHION = Path("/usr/share/datasets/fashion-mnist")


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


def mpiexec() -> str:
    exe = shutil.which("mpiexec", path=str(Path(sys.executable).parent)) or shutil.which("mpiexec")
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
