"""The results file: one HDF5 file per run, written by rank 0 while training.

Rows are appended to one resizable 1-D dataset per column and flushed once per row, under
SWMR, so ``edgempi plot`` can follow a running job and a job killed with SIGKILL leaves every
flushed row readable. A reader can see one row written to some columns only (a running file,
or a kill inside an append); ``edgempi.analysis.runs`` cuts every table to its shortest
column. HDF5 forbids new objects and attributes in SWMR mode, so every table is created
before SWMR starts and the final status is written after the file is reopened.

A writer that cannot write (disk full, quota, a vanished folder) does not raise inside the
training loop, which only rank 0 would leave while the others wait in a collective: it
keeps the first error and stops writing, and the run stops on every rank at the next
collective decision (see ``edgempi.checkpoint``). A writer holds :class:`OutputLock` on its
file for the whole run, so a second job writing the same file is refused at its start.
"""
from __future__ import annotations

import ctypes
import datetime as dt
import errno as errno_mod
import fcntl
import json
import os
import platform
import re
import socket
import stat
import subprocess
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from edgempi.util import guard

SCHEMA = "edgempi/1"
STEP_COLUMNS = ("step", "epoch", "train_loss", "lr", "rounds", "bytes_up", "bytes_down", "ctrl_bytes",
                "compute_s", "comm_s", "wall_s", "sim_s")
EVAL_COLUMNS = ("step", "epoch", "rounds", "bytes_up", "bytes_down", "ctrl_bytes", "wall_s", "sim_s", "test_loss",
                "test_acc")
TABLES = ("steps", "evals", "syncs")
RESERVE = 1 << 20  # disk space a results file keeps in hand to close cleanly (see Recorder.reserve)
_LIBC = ctypes.CDLL(None, use_errno=True)


class OutputError(RuntimeError):
    """A results or checkpoint file could not be written; the message is one line naming the
    path and the operating system's reason."""


def describe(exc: BaseException) -> str:
    """One line for an I/O error: the OS reason (also out of HDF5's long messages), else the first line."""
    code = getattr(exc, "errno", None)
    if not isinstance(code, int):
        found = re.search(r"errno = (\d+)", str(exc))
        code = int(found.group(1)) if found else None
    if code is not None and code in errno_mod.errorcode:
        return f"{os.strerror(code)} [{errno_mod.errorcode[code]}]"
    text = str(exc).strip().splitlines()
    return (text[0][:300] if text else type(exc).__name__)


def can_allocate(fd: int, offset: int, length: int) -> None:
    """Raise ENOSPC/EDQUOT unless ``length`` more bytes could be allocated to the file now: a
    ``fallocate(FALLOC_FL_KEEP_SIZE)`` probe, which also sees a quota (free space does not).
    HDF5 truncates the file to its end at each flush, which gives the blocks back."""
    fallocate = getattr(_LIBC, "fallocate", None)
    if fallocate is None:
        return
    fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_longlong, ctypes.c_longlong]
    if fallocate(fd, 1, offset, length) != 0:
        code = ctypes.get_errno()
        if code not in (errno_mod.EOPNOTSUPP, errno_mod.ENOSYS, errno_mod.EINVAL):
            raise OSError(code, os.strerror(code))


def write_failure(path: Path, exc: BaseException) -> OutputError:
    return OutputError(f"cannot write {path}: {describe(exc)}")


class PlantedLink(OSError):
    """A symbolic link (or another kind of file) where edgempi must create a file of its own:
    refused, never followed, so a link planted in a shared output folder cannot make a run
    overwrite the file it points to."""


def refuse_link(path: Path) -> None:
    if path.is_symlink():
        raise PlantedLink(f"{path} is a symbolic link; refusing to write through it (remove it if it is not yours)")


def write_new(path: Path, data: bytes | memoryview) -> None:
    """Write ``data`` to a new file at ``path`` (a temporary file, renamed over its target
    after): a leftover file of a killed save is removed first (its name only, never what a
    hard link shares), a symbolic link is refused, and the file is created with O_EXCL and
    O_NOFOLLOW, so a link planted in between is refused too."""
    refuse_link(path)
    path.unlink(missing_ok=True)
    with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644), "wb") as f:
        f.write(data)


class OutputLock:
    """An exclusive ``flock`` on ``<results file>.lock``, held by rank 0 for the whole run.

    Two jobs writing one results file would interleave into an unreadable file; the second
    one is refused instead. The lock file is removed when the lock is released; since another
    job may have opened it just before, a lock is only taken on the file that is still at the
    path (checked after locking). The kernel drops the lock when its holder dies, so a killed
    run's leftover lock file blocks nobody: it is removed and a new one created, so the lock is
    always a file this run made (O_EXCL, O_NOFOLLOW), never a planted link or someone's file
    opened and truncated. A symbolic link at the results path is refused here too, before
    HDF5 could follow it. Creating the folder here is also the check that the output folder
    can be created and written, before any work.
    """

    MAX_BYTES = 4096  # a lock file holds one line: "pid N on HOST"

    def __init__(self, results: Path) -> None:
        self.results, self.path = results, results.with_name(results.name + ".lock")
        self.fd: int | None = None
        missing = [p for p in (results.parent, *results.parent.parents) if not p.exists()]
        self.created = missing[-1] if missing else None  # the first folder made here, removed if unused
        try:
            results.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputError(f"cannot create output folder {results.parent}: {describe(exc)}") from exc
        try:
            refuse_link(results)
            while self.fd is None:
                self.fd = self._take()
            os.write(self.fd, f"pid {os.getpid()} on {socket.gethostname()}".encode())
        except PlantedLink as exc:
            self.release()
            raise OutputError(str(exc)) from None
        except OSError as exc:
            self.release()
            raise OutputError(f"cannot create {self.path}: {describe(exc)} (is the output folder writable?)") from exc

    def _take(self) -> int | None:
        """The locked new lock file; None to try again (a leftover was removed, or the holder
        removed the file after we opened it)."""
        refuse_link(self.path)
        try:
            fd, made = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644), True
        except FileExistsError:
            fd, made = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK), False
        try:
            found = os.fstat(fd)
            if not stat.S_ISREG(found.st_mode) or found.st_size > self.MAX_BYTES:
                raise PlantedLink(f"{self.path} is not a lock file of edgempi; remove it if it is not yours")
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 200).decode(errors="replace").strip() or "another job"
            os.close(fd)
            raise OutputError(f"{self.results} is being written by {holder}; wait for it, or choose another "
                              "output.name") from None
        except BaseException:
            os.close(fd)
            raise
        here = os.path.lexists(self.path) and os.lstat(self.path).st_ino == found.st_ino
        if here and made:
            return fd
        if here:  # a killed run's lock file, locked by nobody: make a new one of our own
            os.unlink(self.path)
        os.close(fd)
        return None

    def release(self) -> None:
        """Drop the lock; a refused run (no results file) also leaves no folder it created."""
        if self.fd is not None:
            try:
                os.unlink(self.path)
            except OSError:
                pass
            os.close(self.fd)
            self.fd = None
        folder = self.results.parent
        while self.created is not None and not self.results.exists() and folder.is_relative_to(self.created):
            try:
                folder.rmdir()
            except OSError:
                break
            folder = folder.parent


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
    """Rank 0's writer. Create it only after every check that could refuse the run.

    ``error`` is None while every write succeeded, else the first failure in one line.
    """

    def __init__(self, path: Path, attrs: Mapping[str, Any], tables: Mapping[str, Sequence[str]],
                 arrays: Mapping[str, np.ndarray] = {}, overwrite: bool = False) -> None:
        self.path, self.reserved = Path(path), 0
        self.error: str | None = None
        self.status: str | None = None
        self.run_id = uuid.uuid4().hex
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.file = h5py.File(self.path, "w" if overwrite else "x", libver="latest")
        except OSError as exc:
            raise write_failure(self.path, exc) from exc
        try:
            self.reserve()
            self._create(attrs, tables, arrays)
        except (OSError, RuntimeError, ValueError) as exc:  # a file that could not be set up is removed
            self._abandon()
            self.path.unlink(missing_ok=True)
            raise write_failure(self.path, exc) from exc

    def _create(self, attrs: Mapping[str, Any], tables: Mapping[str, Sequence[str]],
                arrays: Mapping[str, np.ndarray]) -> None:
        root = self.file.attrs
        root.update({"schema": SCHEMA, "status": "running", "created": now(), "hostname": socket.gethostname(),
                     "versions": json.dumps(versions()), "run_id": self.run_id})
        sha = git_sha()
        if sha:
            root["git_sha"] = sha
        root.update({k: v for k, v in attrs.items() if v is not None})
        self.columns: dict[str, tuple[str, ...]] = {}
        self.handles: dict[str, list[h5py.Dataset]] = {}
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
    def resume(cls, path: Path, step: int) -> Recorder:
        """Reopen a run's file to continue after ``step``: rows recorded later are dropped, so
        the history stays one continuous sequence, as if the run had never stopped.

        A writer killed in SWMR mode leaves flags that forbid reopening for writing, so the
        file is rewritten (read as SWMR, copied, renamed over) rather than edited in place;
        by a child process with a deadline, as a damaged file can make SWMR reads hang.
        """
        path = Path(path)
        tmp = path.with_suffix(".resume.tmp")
        try:
            refuse_link(tmp)
            tmp.unlink(missing_ok=True)  # a killed resume's leftover; rewrite() creates it anew (O_EXCL)
            columns, run_id = guard.call("edgempi.record:rewrite", path, tmp, step)
            os.replace(tmp, path)
            self = cls.__new__(cls)
            self.path, self.columns, self.run_id, self.error, self.reserved = path, columns, run_id, None, 0
            self.status, self.handles = None, {}
            self.file = h5py.File(path, "r+", libver="latest")
            self.reserve()
            self.file.swmr_mode = True
        except guard.Timeout as exc:
            raise OutputError(f"cannot read {path}: {exc} (damaged?)") from exc
        except (OSError, RuntimeError, ValueError, KeyError) as exc:
            raise write_failure(tmp if tmp.exists() else path, exc) from exc
        finally:
            tmp.unlink(missing_ok=True)
        return self

    def append(self, table: str, row: Mapping[str, float]) -> None:
        """Append one row (missing columns are NaN) and flush it to disk; after a failed write,
        nothing more (see the module's docstring), nor after the file was closed."""
        if self.error is not None or self.status is not None:
            return
        try:
            self.reserve()
            for col, ds in zip(self.columns[table], self.datasets(table)):
                n = ds.shape[0]
                ds.resize((n + 1,))
                ds[n] = row.get(col, np.nan)
            self.file.flush()
        except (OSError, RuntimeError, ValueError, KeyError) as exc:
            self.error = str(write_failure(self.path, exc))

    def datasets(self, table: str) -> list[h5py.Dataset]:
        """The table's columns, opened once: looked up by name on every row, they were a third
        of a row's cost, which a run that records every round (benchmarks/peers) pays each round."""
        if table not in self.handles:
            group = self.file[table]
            self.handles[table] = [group[col] for col in self.columns[table]]
        return self.handles[table]

    def reserve(self) -> None:
        """Stop writing while the disk can still take the file's close and final status: HDF5
        in SWMR mode crashes (SIGSEGV) when a flush meets a full disk or quota. Each row checks
        that RESERVE / 2 bytes are free (one fstatvfs), and each RESERVE / 2 bytes of growth
        that RESERVE more could be allocated (a probe that also sees a quota)."""
        fd = self.file.id.get_vfd_handle()
        fs = os.fstatvfs(fd)
        if fs.f_bavail * fs.f_frsize < RESERVE // 2:
            raise OSError(errno_mod.ENOSPC, os.strerror(errno_mod.ENOSPC))
        size = os.fstat(fd).st_size
        if size + RESERVE // 2 > self.reserved:
            can_allocate(fd, size, RESERVE)
            self.reserved = size + RESERVE

    def _abandon(self) -> None:
        """Close the writer whatever state a failed write left it in."""
        try:
            if self.file.id.valid:
                self.file.close()
        except (OSError, RuntimeError, ValueError):
            pass

    def close(self, status: str, error: str | None = None) -> None:
        """Leave SWMR and write the final status; a file closed here is never left 'running'.
        Raises OutputError if the file cannot be closed, or is not complete and readable after.

        Without HDF5's file lock: a reader watching the run (edgempi info, a live plot) holds
        a shared lock that would refuse this reopening and leave the run 'running' forever.
        The writer closed above was the file's only one, so the lock guards nothing here.
        Once a status is written, a later close changes nothing: the watchdog may have closed
        the file while the main thread still ran (:mod:`edgempi.watchdog`).
        """
        if self.status is not None:
            return
        try:
            if self.file.id.valid:
                self.file.close()
        except (OSError, RuntimeError, ValueError) as exc:
            self.error = self.error or str(write_failure(self.path, exc))
            self._abandon()
        if self.error is not None and status == "completed":  # rows were lost: never claim success
            status, error = "failed", self.error
        try:
            with h5py.File(self.path, "r+", libver="latest", locking=False) as f:
                f.attrs["status"] = status
                f.attrs["finished"] = now()
                if error is not None:
                    f.attrs["error"] = error
            if self.error is None:
                check_complete(self.path, status, self.columns)
        except (OSError, RuntimeError, ValueError, KeyError) as exc:
            raise write_failure(self.path, exc) from exc
        self.status = status
        if self.error is not None:
            raise OutputError(self.error)


class NullRecorder:
    """What ranks other than 0 hold: the same calls, no file."""

    error = None
    run_id = None

    def append(self, table: str, row: Mapping[str, float]) -> None:
        pass

    def close(self, status: str, error: str | None = None) -> None:
        pass


def check_complete(path: Path, status: str, columns: Mapping[str, Sequence[str]]) -> None:
    """Read back what a finished run wrote: its status and every column, all of one length
    per table. A few milliseconds, once per run, so no run reports success on a file its
    own tools cannot read."""
    with h5py.File(path, "r", locking=False) as f:
        if f.attrs.get("status") != status:
            raise ValueError(f"status reads {f.attrs.get('status')!r} after writing {status!r}")
        for table, names in columns.items():
            lengths = {f[table][col].shape[0] for col in names}
            if len(lengths) != 1:
                raise ValueError(f"/{table} columns have different lengths {sorted(lengths)}")


def open_for_reading(path: str | Path) -> h5py.File:
    """Open a results file, also one still being written (SWMR)."""
    return h5py.File(path, "r", libver="latest", swmr=True)


def summary(path: str | Path, extra: Sequence[str] = ()) -> dict[str, Any]:
    """What a resume checks of a file: status, config text, run id, last recorded step, and the
    ``extra`` attributes it asks for (what the parallel mode recorded; None where absent). Run it
    through ``guard.call`` (a damaged file can make this read hang)."""
    with open_for_reading(path) as f:
        attrs = {k: f.attrs.get(k) for k in ("schema", "status", "config", "run_id", *extra)}
        steps = f["steps"]
        n = min(steps[c].shape[0] for c in steps)
        last = float(steps["step"][n - 1]) if n else 0.0
    attrs = {k: v.decode() if isinstance(v, bytes) else (None if v is None else str(v)) for k, v in attrs.items()}
    return {**attrs, "last_step": last}


def rewrite(path: Path, tmp: Path, step: int) -> tuple[dict[str, tuple[str, ...]], str]:
    """Copy ``path`` to ``tmp`` with the rows after ``step`` dropped (the body of
    :meth:`Recorder.resume`, run in a child process); returns the tables' columns and run id."""
    with open_for_reading(path) as old, h5py.File(tmp, "x", libver="latest") as new:
        new.attrs.update(dict(old.attrs))
        new.attrs.update({"status": "running", "resumed": now()})
        for key in ("finished", "error"):
            if key in new.attrs:
                del new.attrs[key]
        if "run_id" not in new.attrs:  # a file of an older edgempi: from now on it has one
            new.attrs["run_id"] = uuid.uuid4().hex
        columns = {}
        for table in TABLES:
            steps = old[table]["step"][()]
            keep = int(np.searchsorted(steps, step, side="right"))
            group = new.create_group(table)
            for col, ds in old[table].items():
                group.create_dataset(col, data=ds[:keep], maxshape=(None,), chunks=(256,))
            columns[table] = tuple(old[table])
        for name in ("partition",):
            if name in old:
                old.copy(old[name], new, name)
        run_id = str(new.attrs["run_id"])
    return columns, run_id
