"""Checkpoints of a run, so a preempted or requeued job continues where it stopped.

Each rank saves its own state (``rank<R>-step<N>.pt``); rank 0 then writes ``meta.json``
naming step N, the commit point: a crash while rank files are written leaves the previous
checkpoint valid. The meta file also holds the config's hash, the world size, the results
file's run id and every rank file's SHA-256, so a checkpoint of another run, or one with a
damaged byte, is refused instead of silently used.

A checkpoint is data, never code: rank files are loaded with ``torch.load(weights_only=True)``,
which rebuilds tensors and plain Python values only (numpy arrays are stored as tensors), so a
file carrying a pickled payload is refused, not run.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from edgempi import watchdog
from edgempi.comm import Comm
from edgempi.config import RunConfig
from edgempi.record import OutputError, refuse_link, write_failure, write_new

WATCH_KEYS = ("signal_grace_s", "stall_timeout_s")
FORMAT = 2  # 1: pickled rank files without checksums (refused: they cannot be loaded safely)
_ARRAY, _SCALAR = "__ndarray__", "__npscalar__"


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used for this run (one line: the file and the reason)."""


class Interrupted(RuntimeError):
    """The job was told to stop (SIGTERM, SIGINT, SIGUSR1) and saved a checkpoint first;
    ``code`` is the exit code that says which signal (:func:`edgempi.watchdog.exit_code`)."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


class Resumable(Protocol):
    """What the checkpointer needs of the training loop (``edgempi.train.Trainer``)."""

    step: int

    def state_dict(self) -> dict[str, Any]: ...


def training_settings(cfg: RunConfig | dict[str, Any], leave_out: tuple[str, ...]) -> dict[str, Any]:
    """The config without the sections ``leave_out`` and the keys that say how the job is
    watched (``train.signal_grace_s``, ``train.stall_timeout_s``; absent from the files of
    older versions): changing those never renames a results file nor refuses a resume."""
    d = {k: v for k, v in (cfg.to_dict() if isinstance(cfg, RunConfig) else cfg).items() if k not in leave_out}
    if isinstance(d.get("train"), dict):
        d["train"] = {k: v for k, v in d["train"].items() if k not in WATCH_KEYS}
    return d


def config_hash(cfg: RunConfig | dict[str, Any]) -> str:
    """Identity of the training a checkpoint or results file belongs to (the output and
    checkpoint sections may change); also of a config read back from a results file."""
    d = training_settings(cfg, ("output", "checkpoint"))
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()


def checkpoint_dir(results: Path) -> Path:
    return results.with_suffix(".ckpt")


def _encode(value: Any) -> Any:
    """numpy arrays as tagged tensors and numpy scalars as (dtype, Python value): types the
    weights-only loader would refuse, restored exactly by :func:`_decode`."""
    if isinstance(value, np.ndarray):
        return {_ARRAY: torch.from_numpy(value.copy())}
    if isinstance(value, np.generic):
        return {_SCALAR: (value.dtype.str, value.item())}
    if isinstance(value, dict):
        return {k: _encode(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_encode(v) for v in value)
    return value


def _decode(value: Any) -> Any:
    if isinstance(value, dict):
        if set(value) == {_ARRAY}:
            return value[_ARRAY].numpy()
        if set(value) == {_SCALAR}:
            dtype, item = value[_SCALAR]
            return np.dtype(dtype).type(item)
        return {k: _decode(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_decode(v) for v in value)
    return value


def _sealed(meta: dict[str, Any]) -> dict[str, Any]:
    """``meta`` with a SHA-256 of its own canonical text, so a damaged meta.json is noticed."""
    body = {k: v for k, v in meta.items() if k != "sha256"}
    return {**body, "sha256": hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()}


class Checkpointer:
    """Decides collectively when to save (every N steps, every M minutes, on a signal), and
    stops every rank together when rank 0's results file could not be written. The signal is
    the one :mod:`edgempi.watchdog` noted; if the next /steps row does not come within the
    grace (a rank stopped or hung), the watchdog ends the job instead.

    ``output_error`` gives rank 0's first write failure (None while all is well): it is
    reduced with the save decision each /steps row, so a full disk costs no extra collective.
    """

    def __init__(self, cfg: RunConfig, comm: Comm, folder: Path, run_id: str | None = None,
                 output_error: Callable[[], str | None] = lambda: None) -> None:
        self.cfg, self.comm, self.folder, self.run_id = cfg, comm, folder, run_id
        self.output_error = output_error
        self.every_steps = cfg.checkpoint.every_steps
        self.every_s = cfg.checkpoint.every_minutes * 60
        self.last_save = time.monotonic()

    def maybe_save(self, trainer: Resumable) -> None:
        """Called by every rank after each /steps row; the decision is reduced, so all agree."""
        due_time = self.every_s > 0 and time.monotonic() - self.last_save >= self.every_s
        due_step = self.every_steps > 0 and trainer.step % self.every_steps == 0
        failed = self.output_error() is not None
        signalled, timed, failed = self.comm.reduce_metrics([watchdog.pending(), due_time, failed], op="max")
        if failed:
            raise OutputError(self.comm.allgather_object(self.output_error())[0])
        if not (signalled or timed or due_step):
            return
        self.save(trainer)
        if signalled:
            signum = int(signalled)
            raise Interrupted(f"{watchdog.stopped_by(signum)} at step {trainer.step}; checkpoint in {self.folder}; "
                              "continue with edgempi run --resume", watchdog.exit_code(signum))

    def save(self, trainer: Resumable) -> None:
        """Every rank writes its file, rank 0 then commits meta.json; a failed write on any
        rank (disk full) raises OutputError on all, leaves no partial file and keeps the
        previous checkpoint."""
        step, rank = trainer.step, self.comm.rank
        target = self.folder / f"rank{rank}-step{step}.pt"
        header = {"rank": rank, "world_size": self.comm.size, "config_hash": config_hash(self.cfg)}
        entry, error = None, None
        try:
            entry = _write_rank_file(target, {**_encode(trainer.state_dict()), "header": header})
        except OSError as exc:
            error = str(write_failure(target, exc))
        written = self.comm.allgather_object((entry, error))
        if rank == 0 and not any(e for _, e in written):
            meta = {"format": FORMAT, "step": step, "config_hash": header["config_hash"],
                    "world_size": self.comm.size, "run_id": self.run_id, "files": [f for f, _ in written]}
            error = _commit_meta(self.folder, _sealed(meta))
        errors = [e for _, e in written if e] or [e for e in self.comm.allgather_object(error) if e]
        if errors:
            target.unlink(missing_ok=True)
            self.comm.barrier()
            if rank == 0 and not (self.folder / "meta.json").exists():
                shutil.rmtree(self.folder, ignore_errors=True)  # a first save that failed leaves nothing
            raise OutputError(errors[0])
        for old in self.folder.glob(f"rank{rank}-step*.pt"):
            if old != target:
                old.unlink(missing_ok=True)
        self.last_save = time.monotonic()


def _write_rank_file(target: Path, state: dict[str, Any]) -> dict[str, Any]:
    """Write atomically (temporary file, then rename); returns its name, size and SHA-256.
    Neither the folder nor the temporary file may be a link (see :func:`write_new`); the
    rename replaces a link at ``target`` itself, never the file it points to."""
    buf = io.BytesIO()
    torch.save(state, buf)
    data = buf.getbuffer()
    tmp = target.with_suffix(".tmp")
    refuse_link(target.parent)
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        write_new(tmp, data)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return {"name": target.name, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def _commit_meta(folder: Path, meta: dict[str, Any]) -> str | None:
    tmp = folder / "meta.json.tmp"
    try:
        write_new(tmp, json.dumps(meta).encode())
        os.replace(tmp, folder / "meta.json")
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        return str(write_failure(folder / "meta.json", exc))
    return None


def saved_step(folder: Path) -> int | None:
    """The step of the checkpoint in ``folder`` (None: none), for a line to the user; read
    unchecked: resuming checks it (:func:`read_meta`)."""
    try:
        return int(json.loads((folder / "meta.json").read_text(encoding="utf-8"))["step"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def read_meta(folder: Path, cfg: RunConfig, world_size: int) -> dict[str, Any] | None:
    """The checkpoint to resume from, None if there is none; refuses a damaged one or one of
    another run (another config or world size)."""
    path = folder / "meta.json"
    if not path.exists():
        return None
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
        step = int(meta["step"])
        sealed = meta == _sealed(meta)
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise CheckpointError(f"{path} is corrupt ({type(exc).__name__}); delete {folder} to start over") from exc
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: format {meta.get('format', 1)} of an older edgempi, which loads unsafely; "
                              f"delete {folder} to start over")
    if not sealed:
        raise CheckpointError(f"{path} is corrupt (its checksum does not match); delete {folder} to start over")
    if meta["config_hash"] != config_hash(cfg):
        raise CheckpointError(f"{folder} was written by a different config; refusing to resume from it")
    if meta["world_size"] != world_size or len(meta["files"]) != world_size:
        raise CheckpointError(f"{folder} was written by {meta['world_size']} ranks, this job has {world_size}")
    return {**meta, "step": step}


def load_rank_state(folder: Path, rank: int, meta: dict[str, Any]) -> dict[str, Any]:
    """This rank's state, after checking its bytes against meta.json and its header against
    this run; loaded as data only (see the module's docstring)."""
    path = folder / f"rank{rank}-step{meta['step']}.pt"

    def refuse(reason: str) -> CheckpointError:
        return CheckpointError(f"{path}: {reason}; delete {folder} to start over")

    entry = meta["files"][rank]
    if not isinstance(entry, dict) or entry.get("name") != path.name:
        raise refuse(f"meta.json does not list it as rank {rank}'s file of step {meta['step']}")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise refuse(f"missing or unreadable ({exc.strerror})") from exc
    if len(data) != entry.get("bytes") or hashlib.sha256(data).hexdigest() != entry.get("sha256"):
        raise refuse("corrupt (its checksum does not match meta.json)")
    try:
        state = torch.load(io.BytesIO(data), weights_only=True)
    except Exception as exc:  # torch raises many types; the weights-only refusal is UnpicklingError
        raise refuse(f"not a checkpoint of plain data ({type(exc).__name__}), refused unloaded") from exc
    expected = {"rank": rank, "world_size": meta["world_size"], "config_hash": meta["config_hash"]}
    if not isinstance(state, dict) or state.get("header") != expected or state.get("step") != meta["step"]:
        got = state.get("step") if isinstance(state, dict) else None
        raise refuse(f"holds step {got} of another rank, world size or config than meta.json says")
    state.pop("header")
    return _decode(state)


def remove(folder: Path) -> str | None:
    """Delete a finished run's checkpoints; a warning line if that fails (the run stands),
    or if the folder is a link (what it points to is not this run's to delete)."""
    if folder.is_symlink():
        return f"{folder} is a symbolic link; refusing to write or delete through it (remove it if it is not yours)"
    try:
        shutil.rmtree(folder)
    except FileNotFoundError:
        pass
    except OSError as exc:
        return f"could not remove {folder}: {exc.strerror}"
    return None
