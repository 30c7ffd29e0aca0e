"""The results file: one HDF5 file per run, written by rank 0 while training.

Rows are appended to one resizable 1-D dataset per column and flushed once per row, under
SWMR, so ``edgempi plot`` can follow a running job and a job killed with SIGKILL leaves every
flushed row readable. A reader can see one row written to some columns only (a running file,
or a kill inside an append); ``edgempi.analysis.runs`` cuts every table to its shortest
column. HDF5 forbids new objects and attributes in SWMR mode, so every table is created
before SWMR starts and the final status is written after the file is reopened.
"""
from __future__ import annotations

import datetime as dt
import json
import os
import platform
import socket
import subprocess
from pathlib import Path
from typing import Any, Mapping, Sequence

import h5py
import numpy as np

SCHEMA = "edgempi/1"
STEP_COLUMNS = ("step", "epoch", "train_loss", "lr", "rounds", "bytes_up", "bytes_down", "ctrl_bytes",
                "compute_s", "comm_s", "wall_s", "sim_s")
EVAL_COLUMNS = ("step", "epoch", "rounds", "bytes_up", "bytes_down", "wall_s", "sim_s", "test_loss", "test_acc")


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def git_sha() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                             text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def versions() -> dict[str, str]:
    import torch

    from edgempi import __version__
    from edgempi.comm import mpi_versions

    return {"edgempi": __version__, "python": platform.python_version(), "torch": torch.__version__,
            "numpy": np.__version__, "h5py": h5py.__version__, **mpi_versions()}


class Recorder:
    """Rank 0's writer. Create it only after every check that could refuse the run."""

    def __init__(self, path: Path, attrs: Mapping[str, Any], tables: Mapping[str, Sequence[str]],
                 arrays: Mapping[str, np.ndarray] = {}, overwrite: bool = False) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.file = h5py.File(self.path, "w" if overwrite else "x", libver="latest")
        root = self.file.attrs
        root.update({"schema": SCHEMA, "status": "running", "created": now(), "hostname": socket.gethostname(),
                     "versions": json.dumps(versions())})
        sha = git_sha()
        if sha:
            root["git_sha"] = sha
        root.update({k: v for k, v in attrs.items() if v is not None})
        self.columns: dict[str, tuple[str, ...]] = {}
        for table, columns in tables.items():
            group = self.file.create_group(table)
            for col in columns:
                group.create_dataset(col, shape=(0,), maxshape=(None,), dtype="f8", chunks=(256,))
            self.columns[table] = tuple(columns)
        for name, values in arrays.items():
            self.file.create_dataset(name, data=values)
        self.file.swmr_mode = True
        self.file.flush()

    @classmethod
    def resume(cls, path: Path, step: int) -> "Recorder":
        """Reopen a run's file to continue after ``step``: rows recorded later are dropped, so
        the history stays one continuous sequence, as if the run had never stopped.

        A writer killed in SWMR mode leaves flags that forbid reopening for writing, so the
        file is rewritten (read as SWMR, copied, renamed over) rather than edited in place.
        """
        path = Path(path)
        tmp = path.with_suffix(".resume.tmp")
        with open_for_reading(path) as old, h5py.File(tmp, "w", libver="latest") as new:
            new.attrs.update(dict(old.attrs))
            new.attrs.update({"status": "running", "resumed": now()})
            for key in ("finished", "error"):
                if key in new.attrs:
                    del new.attrs[key]
            columns = {}
            for table in ("steps", "evals", "syncs"):
                steps = old[table]["step"][()]
                keep = int(np.searchsorted(steps, step, side="right"))
                group = new.create_group(table)
                for col, ds in old[table].items():
                    group.create_dataset(col, data=ds[:keep], maxshape=(None,), chunks=(256,))
                columns[table] = tuple(old[table])
            for name in ("partition",):
                if name in old:
                    old.copy(old[name], new, name)
        os.replace(tmp, path)
        self = cls.__new__(cls)
        self.path, self.columns = path, columns
        self.file = h5py.File(path, "r+", libver="latest")
        self.file.swmr_mode = True
        return self

    def append(self, table: str, row: Mapping[str, float]) -> None:
        """Append one row (missing columns are NaN) and flush it to disk."""
        group = self.file[table]
        for col in self.columns[table]:
            ds = group[col]
            n = ds.shape[0]
            ds.resize((n + 1,))
            ds[n] = row.get(col, np.nan)
        self.file.flush()

    def close(self, status: str, error: str | None = None) -> None:
        """Leave SWMR and write the final status; a file closed here is never left 'running'.

        Without HDF5's file lock: a reader watching the run (edgempi info, a live plot) holds
        a shared lock that would refuse this reopening and leave the run 'running' forever.
        The writer closed above was the file's only one, so the lock guards nothing here.
        """
        if self.file.id.valid:
            self.file.close()
        with h5py.File(self.path, "r+", libver="latest", locking=False) as f:
            f.attrs["status"] = status
            f.attrs["finished"] = now()
            if error is not None:
                f.attrs["error"] = error


class NullRecorder:
    """What ranks other than 0 hold: the same calls, no file."""

    def append(self, table: str, row: Mapping[str, float]) -> None:
        pass

    def close(self, status: str, error: str | None = None) -> None:
        pass


def open_for_reading(path: str | Path) -> h5py.File:
    """Open a results file, also one still being written (SWMR)."""
    return h5py.File(path, "r", libver="latest", swmr=True)
