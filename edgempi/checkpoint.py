"""Checkpoints of a run, so a preempted or requeued job continues where it stopped.

Each rank saves its own state (``rank<R>-step<N>.pt``); rank 0 then writes ``meta.json``
naming step N, the commit point: a crash while rank files are written leaves the previous
checkpoint valid. The meta file also holds the config's hash and the world size, so a
checkpoint of another run is refused instead of silently used.
"""
from __future__ import annotations

import hashlib
import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import torch

from edgempi.comm import Comm
from edgempi.config import RunConfig
from edgempi.train import Trainer


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used for this run."""


class Interrupted(RuntimeError):
    """The job was told to stop (SIGTERM/SIGUSR1) and saved a checkpoint first."""


def config_hash(cfg: RunConfig) -> str:
    """Identity of the training a checkpoint belongs to (the output section may change)."""
    d = cfg.to_dict()
    d.pop("output")
    d.pop("checkpoint", None)
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()


def checkpoint_dir(results: Path) -> Path:
    return results.with_suffix(".ckpt")


class Checkpointer:
    """Decides collectively when to save (every N steps, every M minutes, on a signal)."""

    def __init__(self, cfg: RunConfig, comm: Comm, folder: Path) -> None:
        self.cfg, self.comm, self.folder = cfg, comm, folder
        self.every_steps = cfg.checkpoint.every_steps
        self.every_s = cfg.checkpoint.every_minutes * 60
        self.last_save = time.monotonic()
        self.signalled = False
        for sig in (signal.SIGTERM, signal.SIGUSR1):
            signal.signal(sig, self._on_signal)

    def _on_signal(self, signum: int, frame: Any) -> None:
        self.signalled = True

    def maybe_save(self, trainer: Trainer) -> None:
        """Called by every rank after each /steps row; the decision is reduced, so all agree."""
        due_time = self.every_s > 0 and time.monotonic() - self.last_save >= self.every_s
        due_step = self.every_steps > 0 and trainer.step % self.every_steps == 0
        signalled, timed = self.comm.reduce_metrics([self.signalled, due_time], op="max")
        if not (signalled or timed or due_step):
            return
        self.save(trainer)
        if signalled:
            raise Interrupted(f"stopped by a signal at step {trainer.step}; checkpoint in {self.folder}; "
                              "continue with edgempi run --resume")

    def save(self, trainer: Trainer) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        step = trainer.step
        target = self.folder / f"rank{self.comm.rank}-step{step}.pt"
        tmp = target.with_suffix(".tmp")
        torch.save(trainer.state_dict(), tmp)
        os.replace(tmp, target)
        self.comm.barrier()
        if self.comm.rank == 0:
            meta = {"step": step, "config_hash": config_hash(self.cfg), "world_size": self.comm.size}
            tmp_meta = self.folder / "meta.json.tmp"
            tmp_meta.write_text(json.dumps(meta))
            os.replace(tmp_meta, self.folder / "meta.json")
        self.comm.barrier()
        for old in self.folder.glob(f"rank{self.comm.rank}-step*.pt"):
            if old != target:
                old.unlink()
        self.last_save = time.monotonic()


def read_meta(folder: Path, cfg: RunConfig, world_size: int) -> dict[str, Any] | None:
    """The checkpoint to resume from, None if there is none; refuses one of another run."""
    path = folder / "meta.json"
    if not path.exists():
        return None
    try:
        meta = json.loads(path.read_text())
        step = int(meta["step"])
    except (ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{path} is corrupt ({exc}); delete {folder} to start over") from exc
    if meta.get("config_hash") != config_hash(cfg):
        raise CheckpointError(f"{folder} was written by a different config; refusing to resume from it")
    if meta.get("world_size") != world_size:
        raise CheckpointError(f"{folder} was written by {meta.get('world_size')} ranks, this job has {world_size}")
    return {**meta, "step": step}


def load_rank_state(folder: Path, rank: int, step: int) -> dict[str, Any]:
    path = folder / f"rank{rank}-step{step}.pt"
    try:
        state = torch.load(path, weights_only=False)
    except Exception as exc:  # torch.load raises many types on a damaged file
        raise CheckpointError(f"{path} is missing or corrupt ({type(exc).__name__}); delete {folder} to start "
                              "over") from exc
    if state.get("step") != step:
        raise CheckpointError(f"{path} holds step {state.get('step')}, meta.json says {step}")
    return state
