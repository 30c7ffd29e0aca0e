"""One run from a validated config: agree that every rank is ready, open the file, train.

The failure rules of DESIGN.md live here: a problem every rank can see (bad data path,
results file already there) is agreed on collectively and reported once, so no rank is left
waiting in a collective; anything later aborts the whole job from the rank that failed.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

from edgempi import algorithms
from edgempi import config as config_mod
from edgempi.comm import Comm
from edgempi.config import RunConfig
from edgempi.network import link_from_config
from edgempi.record import NullRecorder, Recorder
from edgempi.train import Outcome, Seeds, build, tables, threads_per_rank, train


class SetupError(RuntimeError):
    """The run was refused before training started; nothing was written."""


def results_path(cfg: RunConfig, label: str) -> Path:
    """``<output.dir>/<label>-<algorithm>-<config hash>.h5``: a changed config never collides."""
    if cfg.output.name:
        name = cfg.output.name if cfg.output.name.endswith(".h5") else f"{cfg.output.name}.h5"
    else:
        digest = hashlib.sha1(cfg.to_yaml().encode()).hexdigest()[:8]
        name = f"{label}-{cfg.algorithm.name}-{digest}.h5"
    return Path(cfg.output.dir) / name


def agree(comm: Comm, error: str | None) -> None:
    """Raise the same SetupError on every rank if any rank failed (lowest rank's message)."""
    errors = [e for e in comm.allgather_object(error) if e]
    if errors:
        raise SetupError(errors[0])


def run(cfg: RunConfig, comm: Comm, path: Path, overwrite: bool = False, progress: bool = True) -> Outcome:
    """Train and write ``path`` (rank 0); raises SetupError before anything is written."""
    import torch

    config_mod.validate_world(cfg, comm.size)
    comm.link = link_from_config(cfg.network)
    torch.set_num_threads(threads_per_rank(cfg, comm))
    setup, error = None, None
    try:
        setup = build(cfg, comm)
    except (ValueError, OSError, RuntimeError) as exc:
        error = str(exc)
    agree(comm, error)
    if comm.rank == 0 and path.exists() and not overwrite:
        error = f"{path} exists; pass --overwrite to replace it or --set output.name=NEW"
    agree(comm, error)

    recorder: Recorder | NullRecorder = NullRecorder()
    if comm.rank == 0:
        attrs = {"config": cfg.to_yaml(), "algorithm": cfg.algorithm.name, "world_size": comm.size,
                 "devices": comm.size,
                 "evaluated_model": "average" if algorithms.POLICIES[cfg.algorithm.name].models_differ else "shared"}
        recorder = Recorder(path, attrs, tables(setup), {"partition/counts": setup.partition_counts},
                            overwrite=overwrite)
    try:
        outcome = train(setup, comm, recorder, progress=progress)
    except BaseException as exc:
        recorder.close("failed", f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
        raise
    recorder.close("completed")
    return outcome


__all__ = ["SetupError", "Seeds", "agree", "results_path", "run"]
