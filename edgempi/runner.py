"""One run from a validated config: agree that every rank is ready, open the file, train.

The failure rules of DESIGN.md live here: a problem every rank can see (bad data path,
results file already there) is agreed on collectively and reported once, so no rank is left
waiting in a collective; anything later aborts the whole job from the rank that failed.
"""
from __future__ import annotations

import hashlib
import sys
import time
from pathlib import Path

from edgempi import config as config_mod
from edgempi.checkpoint import Checkpointer, Interrupted, checkpoint_dir, load_rank_state, read_meta
from edgempi.comm import Comm
from edgempi.config import RunConfig
from edgempi.record import Recorder
from edgempi.topology import threads_per_rank
from edgempi.train import Outcome, Trainer, build, tables

ABORT_GRACE_S = 2.0  # CI lost the message at 0 s under load; 1 s left too little margin


class SetupError(RuntimeError):
    """The run was refused before training started; nothing was written."""


def results_path(cfg: RunConfig, label: str) -> Path:
    """``<output.dir>/<label>-<algorithm>-<config hash>.h5``: a changed config never collides.

    The hash leaves out the output section, so the same run gets the same file name in
    whatever folder ``--out`` puts it.
    """
    import yaml

    if cfg.output.name:
        name = cfg.output.name if cfg.output.name.endswith(".h5") else f"{cfg.output.name}.h5"
    else:
        training = {k: v for k, v in cfg.to_dict().items() if k != "output"}
        digest = hashlib.sha1(yaml.safe_dump(training, sort_keys=False).encode()).hexdigest()[:8]
        name = f"{label}-{cfg.algorithm.name}-{digest}.h5"
    return Path(cfg.output.dir) / name


def evaluated_model(cfg: RunConfig, models_differ: bool) -> str:
    """What the evaluations of the file score, in words (stored as an attribute)."""
    if not models_differ:
        return "shared model"
    if getattr(cfg.algorithm, "local_bn", False):
        return "average weights, each device's own BatchNorm layers (FedBN)"
    if cfg.algorithm.eval_stats == "local":
        return "average weights, each device's own BatchNorm statistics"
    return "average weights and BatchNorm statistics"


def agree(comm: Comm, error: str | None) -> None:
    """Raise the same SetupError on every rank if any rank failed (lowest rank's message)."""
    errors = [e for e in comm.allgather_object(error) if e]
    if errors:
        raise SetupError(errors[0])


def run(cfg: RunConfig, comm: Comm, path: Path, overwrite: bool = False, progress: bool = True,
        resume: bool = False) -> Outcome:
    """Train and write ``path`` (rank 0); raises SetupError before anything is written.

    With ``resume``, continue from the checkpoint beside ``path`` if there is one (a run
    that stopped before its first checkpoint starts again from step 0 in the same file).
    """
    import torch

    config_mod.validate_world(cfg, comm.size)
    torch.set_num_threads(threads_per_rank(cfg, comm))
    folder = checkpoint_dir(path)
    setup, state, error = None, None, None
    try:
        setup = build(cfg, comm)
        meta = read_meta(folder, cfg, comm.size) if resume else None
        state = load_rank_state(folder, comm.rank, meta["step"]) if meta else None
    except (ValueError, OSError, RuntimeError) as exc:
        error = str(exc)
    agree(comm, error)
    if comm.rank == 0:
        if resume and not path.exists():
            error = f"{path} does not exist: nothing to resume (run without --resume)"
        elif path.exists() and not (overwrite or resume):
            error = f"{path} exists; pass --overwrite to replace it, --resume to continue it, or --set output.name=NEW"
    agree(comm, error)

    trainer = Trainer(setup, comm, progress=progress)
    if state is not None:
        trainer.load_state_dict(state)
    if comm.rank == 0:
        if state is not None:
            trainer.recorder = Recorder.resume(path, trainer.step)
        else:
            attrs = {"config": cfg.to_yaml(), "algorithm": cfg.algorithm.name, "world_size": comm.size,
                     "devices": comm.devices, "evaluated_model": evaluated_model(cfg, trainer.policy.models_differ)}
            arrays = {"partition/counts": setup.partition_counts, **(setup.drift.arrays() if setup.drift else {})}
            trainer.recorder = Recorder(path, attrs, tables(setup), arrays, overwrite=True if resume else overwrite)
    checkpointer = Checkpointer(cfg, comm, folder)
    try:
        outcome = trainer.run(checkpointer)
    except Interrupted as exc:
        trainer.recorder.close("interrupted", str(exc))
        raise
    except BaseException as exc:
        trainer.recorder.close("failed", f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
        raise
    trainer.recorder.close("completed")
    return outcome


def abort(comm: Comm, code: int = 1) -> None:
    """End every rank of the job now: the way a failure on one rank avoids a hang.

    The launcher forwards a rank's stderr through a pipe that it may stop draining once the
    abort reaches it, so the pause lets the message that says why reach the user first."""
    sys.stdout.flush()
    sys.stderr.flush()
    if comm.size > 1:
        time.sleep(ABORT_GRACE_S)
        comm.mpi_abort(code)


__all__ = ["SetupError", "abort", "agree", "results_path", "run"]
