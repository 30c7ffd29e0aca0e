"""One run from a validated config: agree that every rank is ready, open the file, train.

The failure rules live here (bad input is one line and exit 2, a failure on one rank ends the
whole job, nothing already written is lost): a problem every rank can see (bad data path,
results file already there) is agreed on collectively and reported once, so no rank is left
waiting in a collective; anything later aborts the whole job from the rank that failed.

Results are never lost: rank 0 holds a lock on the results file for the whole run, ``--resume``
continues only the run the file holds (same config, a checkpoint of that file) and changes
nothing in a completed one, and only ``--overwrite`` replaces a file. A run reports success
only after its file was read back complete.
"""
from __future__ import annotations

import hashlib
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from edgempi import config as config_mod
from edgempi import parallel, watchdog
from edgempi.algorithms import Policy
from edgempi.checkpoint import (
    Checkpointer,
    Interrupted,
    checkpoint_dir,
    config_hash,
    load_rank_state,
    read_meta,
    remove,
    saved_step,
    training_settings,
)
from edgempi.comm import Comm
from edgempi.config import RunConfig
from edgempi.host import topology
from edgempi.host.heap import keep_freed_memory
from edgempi.record import SCHEMA, NullRecorder, OutputError, OutputLock, Recorder, describe
from edgempi.train import Outcome, Setup, Trainer, build, tables
from edgempi.util import guard, yamltext
from edgempi.util.progress import write_line


class SetupError(RuntimeError):
    """The run was refused before training started; nothing was written."""


class RankFiles:
    """What rank 0 holds of a run (the lock, then the open results file), so that the watchdog
    can leave it in order when it ends a job that cannot end itself."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lock: OutputLock | None = None
        self.recorder: Recorder | None = None

    def leave(self, status: str, reason: str) -> str:
        """Mark the file ``status`` with ``reason``, drop the lock; what was done, in words."""
        said = "nothing was written"
        if self.recorder is not None:
            _close(self.recorder, status, reason)
            said = f"{self.path} marked {status}; {resume_hint(self.path)}"
        if self.lock is not None:
            self.lock.release()
        return said


def resume_hint(path: Path) -> str:
    step = saved_step(checkpoint_dir(path))
    if step is None:
        return "no checkpoint: edgempi run --resume starts again from step 0"
    return f"edgempi run --resume continues from step {step}"


def results_path(cfg: RunConfig, label: str) -> Path:
    """``<output.dir>/<label>-<algorithm>-<config hash>.h5``: a changed config never collides.

    The hash leaves out the output section, so the same run gets the same file name in
    whatever folder ``--out`` puts it.
    """
    import yaml

    if cfg.output.name:
        name = cfg.output.name if cfg.output.name.endswith(".h5") else f"{cfg.output.name}.h5"
    else:
        training = training_settings(cfg, ("output",))
        digest = hashlib.sha1(yaml.safe_dump(training, sort_keys=False).encode()).hexdigest()[:8]
        name = f"{label}-{cfg.algorithm.name}-{digest}.h5"
    return Path(cfg.output.dir) / name


def evaluated_model(cfg: RunConfig) -> str:
    """What the evaluations of the file score, in words (stored as an attribute)."""
    if not cfg.algorithm.capabilities.models_differ:
        return "shared model"
    weights = "global model of the last sync" if cfg.train.eval_model == "global" else "average weights"
    if getattr(cfg.algorithm, "local_bn", False):
        return f"{weights}, each device's own BatchNorm layers (FedBN)"
    if cfg.algorithm.eval_stats == "local":
        return f"{weights}, each device's own BatchNorm statistics"
    return f"{weights} and BatchNorm statistics"


def protocol_attrs(cfg: RunConfig, policy: Policy) -> dict[str, Any]:
    """``eval_model``: ``global`` where the scored model is one the method produced (also
    wherever all devices hold one model), ``average`` where it is the devices' uncounted
    average; then ``sync_bytes``, what one device would send (and receive) in the weight sync
    that makes that average, which "bytes to target" charges."""
    if not cfg.algorithm.capabilities.models_differ or cfg.train.eval_model == "global":
        return {"eval_model": "global"}
    synced = policy.held.values if policy.held is not None else policy.ctx.flat.params  # a plug-in's: its weights
    return {"eval_model": "average", "sync_bytes": int(synced.numel() * synced.element_size())}


def agree(comm: Comm, error: str | None, share: Any = None, exc_type: type[Exception] = SetupError,
          before_training: bool = False) -> Any:
    """Raise the same error on every rank if any rank failed (lowest rank's message), else
    return rank 0's ``share``: one allgather. ``before_training``, also stop every rank (nothing
    written yet) if any was told to stop by a signal."""
    gathered = comm.allgather_object((error, share, watchdog.pending() if before_training else 0))
    errors = [e for e, _, _ in gathered if e]
    if errors:
        raise exc_type(errors[0])
    signum = max(s for _, _, s in gathered)
    if signum:
        raise Interrupted(f"{watchdog.stopped_by(signum)} before training started; nothing was written",
                          watchdog.exit_code(signum))
    return gathered[0][1]


def plan(cfg: RunConfig, path: Path, overwrite: bool, resume: bool) -> tuple[str, dict[str, str | None]]:
    """Rank 0, holding the lock: ``new`` (write a new file), ``resume`` or ``done`` (a
    completed run of this config: nothing to do), with what a resumed file records of how the
    run was spread over the ranks (:attr:`edgempi.parallel.ParallelMode.recorded`; nothing for a
    new file); SetupError when the file must be kept."""
    if not path.exists():
        if resume:
            raise SetupError(f"{path} does not exist: nothing to resume (run without --resume)")
        return "new", {}
    if overwrite:
        return "new", {}
    if not resume:
        raise SetupError(f"{path} exists; pass --overwrite to replace it, --resume to continue it, "
                         "or --set output.name=NEW")
    keys = parallel.mode_class(cfg).recorded
    try:
        found = guard.call("edgempi.record:summary", path, keys)
        if found["schema"] != SCHEMA:
            raise ValueError(f"schema {found['schema']!r}")
        same = config_hash(yamltext.parse(found["config"] or "", str(path), "stored config") or {}) == config_hash(cfg)
    except guard.Timeout as exc:
        raise SetupError(f"cannot read {path}: {exc} (damaged?); pass --overwrite to replace it") from exc
    except (OSError, RuntimeError, ValueError, KeyError, TypeError, AttributeError, yaml.YAMLError) as exc:
        raise SetupError(f"{path} is not a readable results file ({describe(exc)}); pass --overwrite to replace "
                         "it") from exc
    if not same:
        raise SetupError(f"{path} was written by a different config; --resume continues only the same run "
                         "(pass --overwrite to replace it, or --set output.name=NEW)")
    return "done" if found["status"] == "completed" else "resume", {key: found[key] for key in keys}


def _matching(meta: dict[str, Any] | None, path: Path, folder: Path) -> dict[str, Any] | None:
    """Rank 0: the checkpoint must be this file's (its run id) and not ahead of its rows."""
    if meta is None:
        return None
    found = guard.call("edgempi.record:summary", path)
    if meta.get("run_id") != found["run_id"]:
        raise SetupError(f"{folder} belongs to another run than {path} (run id {meta.get('run_id')}, the file's "
                         f"{found['run_id']}); delete {folder}, or pass --overwrite")
    if meta["step"] > found["last_step"]:
        raise SetupError(f"{folder} is at step {meta['step']} but {path} ends at step {found['last_step']:g}; "
                         "the two do not belong together")
    return meta


def _prepare(cfg: RunConfig, comm: Comm, path: Path, action: str,
             recorded: dict[str, str | None]) -> tuple[Setup, dict[str, Any] | None]:
    """Every rank: data, model, and (resuming) this rank's checkpoint state, checked."""
    folder = checkpoint_dir(path)
    setup, state, error = None, None, None
    try:
        setup = build(parallel.mode_class(cfg).resumed(cfg, recorded), comm)
        meta = read_meta(folder, cfg, comm.size) if action == "resume" else None
        if comm.rank == 0:
            _matching(meta, path, folder)
        state = load_rank_state(folder, comm.rank, meta) if meta else None
    except guard.Timeout as exc:
        error = f"cannot read {path}: {exc} (damaged?)"
    except (ValueError, OSError, RuntimeError) as exc:
        error = str(exc)
    agree(comm, error, before_training=True)
    assert setup is not None
    return setup, state


def _open_recorder(cfg: RunConfig, trainer: Trainer, path: Path, resumed: bool) -> Recorder:
    """Rank 0: continue the file, or (after removing stale checkpoints) write a new one."""
    if resumed:
        return Recorder.resume(path, trainer.step)
    error = remove(checkpoint_dir(path))
    if error:
        raise OutputError(error)
    setup = trainer.setup
    attrs = {"config": cfg.to_yaml(), "algorithm": cfg.algorithm.name, "world_size": trainer.comm.size,
             "devices": trainer.comm.devices, "evaluated_model": evaluated_model(cfg),
             **protocol_attrs(cfg, trainer.policy), **setup.mode.attrs()}
    arrays = {"partition/counts": setup.partition_counts, **(setup.drift.arrays() if setup.drift else {})}
    return Recorder(path, attrs, tables(setup), arrays, overwrite=path.exists())


def _close(recorder: Recorder | NullRecorder, status: str, error: str | None = None) -> None:
    """Write a failed or interrupted run's status if the file can still be written; the
    original error is what the user is told, so a second failure here is one warning line."""
    try:
        recorder.close(status, error)
    except OutputError as exc:
        if recorder.error is None:  # else the write failure that stopped the run, reported already
            print(f"edgempi: could not record status {status!r}: {exc}", file=sys.stderr, flush=True)


def run(cfg: RunConfig, comm: Comm, path: Path, overwrite: bool = False, progress: bool = True,
        resume: bool = False, keep_checkpoints: bool = False) -> Outcome | None:
    """Train and write ``path`` (rank 0); raises SetupError before anything is written.

    With ``resume``, continue from the checkpoint beside ``path`` if there is one (a run
    that stopped before its first checkpoint starts again from step 0 in the same file);
    returns None if the file holds this run completed already. The checkpoints of a
    completed run are removed unless ``keep_checkpoints``.
    """
    config_mod.validate_world(cfg, comm.size)
    agree(comm, topology.fit(cfg, comm))  # threads set, and the run fits its node's cores and memory
    keep_freed_memory()
    files, planned, error = RankFiles(path), None, None
    watchdog.begin(cfg.train.signal_grace_s, cfg.train.stall_timeout_s, files.leave if comm.rank == 0 else None)
    try:
        if comm.rank == 0:
            try:
                files.lock = OutputLock(path)
                planned = plan(cfg, path, overwrite, resume)
            except (OutputError, SetupError) as exc:
                error = str(exc)
        action, recorded = agree(comm, error, planned, before_training=True)
        if action == "done":
            if comm.rank == 0:
                write_line(f"edgempi: {path} is completed already; nothing to resume, nothing changed")
            return None
        trainer = _begin(cfg, comm, path, action, progress, recorded, files)
        recorder = trainer.recorder
        checkpointer = Checkpointer(cfg, comm, checkpoint_dir(path), recorder.run_id, lambda: recorder.error)
        watchdog.training(lambda: trainer.step)
        with _final_status(recorder, comm):
            outcome = trainer.run(checkpointer)
        if comm.rank == 0 and not keep_checkpoints:
            warning = remove(checkpoint_dir(path))
            if warning:
                print(f"edgempi: {warning}", file=sys.stderr, flush=True)
        return outcome
    finally:
        if files.lock is not None:
            files.lock.release()


def warn_single_device(cfg: RunConfig, world_size: int) -> None:
    """One line when a method of many devices was started as one (``edgempi run`` without
    mpiexec); said only once the run has been accepted, so a refusal stays one line."""
    if cfg.algorithm.capabilities.exchanges and world_size == 1 and cfg.parallel.devices_per_rank == 1:
        write_line(f"edgempi: warning: {cfg.algorithm.name} is running as a single device (world size 1, "
                   "parallel.devices_per_rank 1); start it under mpiexec -n K or srun for K devices")


def say_batching(cfg: RunConfig, trainer: Trainer) -> None:
    """One line, when a rank holds several devices, on how they train (``parallel.batched``)."""
    if cfg.parallel.devices_per_rank > 1:
        how = ("together, as one batched computation" if trainer.unbatched_because is None
               else f"one after another ({trainer.unbatched_because})")
        write_line(f"edgempi: the {cfg.parallel.devices_per_rank} devices of each rank take their local steps {how}")


def _begin(cfg: RunConfig, comm: Comm, path: Path, action: str, progress: bool,
           recorded: dict[str, str | None], files: RankFiles) -> Trainer:
    """Build, restore, open the file (rank 0, then kept in ``files`` for the watchdog), and say how
    the run starts. A resumed run is spread over the ranks as its file records (``recorded``),
    not as the parallel mode would choose from what it measures now."""
    setup, state = _prepare(cfg, comm, path, action, recorded)
    trainer = Trainer(setup, comm, progress=progress)
    if state is not None:
        trainer.load_state_dict(state)
    error = None
    if comm.rank == 0:
        try:
            trainer.recorder = files.recorder = _open_recorder(cfg, trainer, path, resumed=state is not None)
        except OutputError as exc:
            error = str(exc)
    agree(comm, error)
    if comm.rank == 0:
        if action == "resume":
            write_line(f"edgempi: resuming from step {trainer.step}" if state is not None
                       else "edgempi: no checkpoint: starting again from step 0")
        warn_single_device(cfg, comm.size)
        say_batching(cfg, trainer)
    return trainer


@contextmanager
def _final_status(recorder: Recorder | NullRecorder, comm: Comm) -> Iterator[None]:
    """Close the file with the status training ended in: ``interrupted`` or ``failed`` (with the
    error) if it raised, else ``completed``, agreed by all ranks (a file rank 0 could not close
    fails the run on every rank)."""
    try:
        yield
    except Interrupted as exc:
        _close(recorder, "interrupted", str(exc))
        raise
    except OutputError as exc:
        _close(recorder, "failed", str(exc))
        raise
    except BaseException as exc:
        _close(recorder, "failed", f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
        raise
    error = None
    try:
        recorder.close("completed")
        watchdog.completed()
    except OutputError as exc:
        error = str(exc)
        _close(recorder, "failed", error)
    agree(comm, error, exc_type=OutputError)


__all__ = ["SetupError", "agree", "results_path", "run"]
