"""A job always ends: on a signal, and when a rank stops making progress.

Why a thread. Python runs a signal handler in the main thread between two bytecodes, so a rank
whose main thread waits in a collective that a stopped peer never joins, or sits in a plug-in's
forward that never returns, never runs it. So the handler only notes the signal, and a thread
of each rank acts on it: it hears of the signal at once (the interpreter's C-level handler
writes every signal to the :func:`signal.set_wakeup_fd` pipe, whatever the main thread is
doing) and ends the job if it has not ended by itself within ``train.signal_grace_s``. A
healthy job does end by itself: the loop agrees on the signal at its next /steps row, saves a
checkpoint and stops (:mod:`edgempi.checkpoint`); the thread steps in only when that cannot
happen in time. Before training (nothing to save) it ends the job at once; once the results
file is complete, a signal changes nothing.

Why heartbeats by messages. To say which ranks did not answer, rank 0 must know how far each
got without a collective, which would hang on the very peer it asks about. Each rank's thread
sends rank 0, every :data:`TICK_S`, its step and whether its main thread waits in a collective
(its innermost Python frame is in ``edgempi/comm.py``), by non-blocking messages
(:class:`edgempi.comm.Heartbeats`), and rank 0's thread receives them without waiting. This
needs no shared file system (a side file per rank would, and NFS clients cache what they read
for seconds), and no progress from a peer's main thread (a one-sided window over the network
may need it). The loop pays nothing per step: the thread reads ``Trainer.step``, which the
loop keeps anyway, and wakes twice a second.

Who ends the job. Rank 0, which holds the results file and its lock: it marks the file, drops
the lock, says in one line what happened and which ranks did not answer, and calls MPI_Abort.
Every other rank does the same without a file :data:`MARGIN_S` later if the job is still alive,
in case rank 0 itself is the frozen one (then its file stays ``running``).
"""
from __future__ import annotations

import os
import select
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from edgempi.util.progress import write_line

if TYPE_CHECKING:
    from edgempi.comm import Comm

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)
TICK_S = 0.5  # how often a rank tells rank 0 how far it got, and checks its deadlines
SILENT_S = 3.0  # a rank not heard from for this long is reported as silent (stopped, or holding the GIL)
CLEANUP_S = 5.0  # the most rank 0 waits to mark the file before it aborts anyway
ABORT_GRACE_S = 2.0  # CI lost the message at 0 s under load; 1 s left too little margin
MARGIN_S = CLEANUP_S + ABORT_GRACE_S + 3.0  # other ranks leave rank 0 this long to end the job first
SETUP, TRAINING, DONE = range(3)  # before training, training (and closing), the file complete

_received: list[tuple[int, float]] = []  # (signal, when), in the order they came
_wakeup: int | None = None  # the read end of the pipe the interpreter writes signals to
_current: Watchdog | None = None


# Rank 0's way to leave a run in order when the job is ended: ``leave(status, reason)`` marks
# the results file and drops its lock, and returns what it did, in words.
Leave = Callable[[str, str], str]


def exit_code(signum: int) -> int:
    """The shell's convention: 130 after Ctrl-C; 143 after SIGTERM and SIGUSR1 (the exit code
    ``slurm/sweep.sbatch`` requeues on)."""
    return 130 if signum == signal.SIGINT else 143


def stopped_by(signum: int) -> str:
    return f"stopped by {signal.Signals(signum).name}"


def install() -> None:
    """From now on a stop signal is noted, not fatal; for the commands that train, first thing,
    so a signal during start-up (the imports, MPI's start) ends the job with one line too
    (MPICH prints a 12-line banner for a rank killed by a signal)."""
    global _wakeup
    if _wakeup is not None:
        return
    read_end, write_end = os.pipe()
    for fd in (read_end, write_end):
        os.set_blocking(fd, False)
    signal.set_wakeup_fd(write_end, warn_on_full_buffer=False)
    _wakeup = read_end
    for sig in STOP_SIGNALS:
        signal.signal(sig, _note)


def _note(signum: int, frame: Any) -> None:
    if not _received:
        _received.append((signum, time.monotonic()))


def pending() -> int:
    """The first stop signal this process received (0: none)."""
    return _received[0][0] if _received else 0


def start(comm: Comm) -> Watchdog:
    """Watch this rank from now on (right after MPI started); collective."""
    global _current
    _current = Watchdog(comm)
    return _current


def stop() -> None:
    """The work is over: stop watching, and ignore stop signals from here on, so that none
    can kill the process while it tears down (the interpreter resets handlers to the default,
    fatal action as it exits; an ignored signal stays ignored)."""
    global _current
    if _current is not None:
        _current.close()
        _current = None
    if _wakeup is not None:
        for sig in STOP_SIGNALS:
            signal.signal(sig, signal.SIG_IGN)


def begin(grace_s: float, stall_s: float, leave: Leave | None) -> None:
    """A run starts (phase SETUP), with its settings and what rank 0 will have to leave."""
    if _current is not None:
        _current.grace_s, _current.stall_s, _current.leave = grace_s, stall_s, leave
        _current.enter(SETUP)


def training(step_of: Callable[[], int]) -> None:
    """The loop runs: progress is ``step_of()``, a signal leaves it the grace to checkpoint."""
    if _current is not None:
        _current.step_of = step_of
        _current.enter(TRAINING)


def completed() -> None:
    """The results file is complete: a signal from now on leaves it so."""
    if _current is not None:
        _current.enter(DONE)


def abort(comm: Comm, code: int = 1, quiet: bool = False) -> None:
    """End every rank of the job now: the way a failure on one rank avoids a hang.

    The launcher forwards a rank's stderr through a pipe that it may stop draining once the
    abort reaches it, so the pause lets the message that says why reach the user first. With
    ``quiet``, nothing more reaches stdout or stderr (what is written already does): the caller
    said why, and neither MPICH's line about the abort nor a main thread that is still running
    may add to it."""
    sys.stdout.flush()
    sys.stderr.flush()
    if quiet:
        devnull = os.open(os.devnull, os.O_WRONLY)
        for fd in (1, 2):
            os.dup2(devnull, fd)
    if comm.size > 1:
        time.sleep(ABORT_GRACE_S)
    if comm.size > 1 or quiet:
        comm.mpi_abort(code)


@dataclass
class Beat:
    """What rank 0 last heard from a rank, and when (its own clock)."""

    step: int  # -1: not training
    waiting: bool  # its main thread waits in a collective
    heard: float


class Watchdog:
    """This rank's watching thread and what it knows (see the module's docstring)."""

    def __init__(self, comm: Comm) -> None:
        self.comm, self.rank = comm, comm.rank
        self.grace_s, self.stall_s = 10.0, 0.0  # until a run's config says
        self.leave: Leave | None = None
        self.step_of: Callable[[], int] | None = None
        self.phase, self.since = SETUP, time.monotonic()
        self.beats: dict[int, Beat] = {}
        self.told: tuple[int, float] | None = None  # the first signal a peer said it received, heard when
        self.moved: dict[int, tuple[int, float]] = {}  # rank → (step, when rank 0 saw it change)
        self.main = threading.main_thread().ident
        self.comm_file = sys.modules[type(comm).__module__].__file__
        self.channel: Any = None
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._watch, name="edgempi-watchdog", daemon=True)
        self.thread.start()  # first: if a peer never joins the collective below, this thread ends the job
        from edgempi.comm import Heartbeats  # not at import: importing comm starts MPI

        self.channel = Heartbeats(comm)

    def enter(self, phase: int) -> None:
        self.phase, self.since = phase, time.monotonic()
        self.moved = {}  # rebound, not cleared: the thread may be reading the old one

    def close(self) -> None:
        self.done.set()
        self.thread.join(timeout=2 * TICK_S + 1)

    # -- the thread ------------------------------------------------------------------------
    def _watch(self) -> None:
        while not self.done.is_set():
            if _wakeup is not None and select.select([_wakeup], [], [], TICK_S)[0]:
                _drain()
            elif _wakeup is None:
                self.done.wait(TICK_S)
            if self.done.is_set():
                return
            self._beat(time.monotonic())
            due = self._due(time.monotonic())
            if due is not None:
                self._end(*due)
                return

    def _beat(self, now: float) -> None:
        """Tell rank 0 how far this rank got; rank 0 takes in what the others told it."""
        step = self.step_of() if self.step_of is not None and self.phase == TRAINING else -1
        frame = sys._current_frames().get(self.main) if self.main is not None else None
        waiting = frame is not None and frame.f_code.co_filename == self.comm_file
        if self.channel is not None and self.rank != 0:
            self.channel.send([step, waiting, pending()])
            self._moved(self.rank, step, now)
            return
        heard = {0: (step, waiting, 0)}
        if self.channel is not None:
            heard.update({r: (int(v[0]), bool(v[1]), int(v[2])) for r, v in self.channel.latest(3).items()})
        for rank, (step, waiting, signum) in heard.items():
            self.beats[rank] = Beat(step, waiting, now)
            self._moved(rank, step, now)
            if signum and self.told is None:
                self.told = (signum, now)

    def _moved(self, rank: int, step: int, now: float) -> None:
        """Remember when ``rank``'s step last changed (counted from the start of the phase)."""
        moved = self.moved
        if rank not in moved:
            moved[rank] = (step, self.since)
        elif moved[rank][0] != step:
            moved[rank] = (step, now)

    def _due(self, now: float) -> tuple[str, str, int] | None:
        """(reason, the file's status, exit code) once this rank must end the job, else None."""
        late = 0.0 if self.rank == 0 else MARGIN_S
        first = min((s for s in (_received[0] if _received else None, self.told) if s), key=lambda s: s[1],
                    default=None)
        if first is not None and self.phase != DONE and now >= first[1] + self.grace_s + late:
            if self.phase == SETUP:
                return f"{stopped_by(first[0])} before training started", "interrupted", exit_code(first[0])
            return (f"{stopped_by(first[0])}; no checkpoint within train.signal_grace_s = {self.grace_s:g} s: "
                    f"{self._missing(now, 'did not answer')}", "interrupted", exit_code(first[0]))
        if self.phase == TRAINING and self.stall_s > 0:
            stalled = [r for r, (_, when) in list(self.moved.items()) if now - when >= self.stall_s + late]
            if stalled:
                return (f"no progress for {self.stall_s:g} s (train.stall_timeout_s): "
                        f"{self._missing(now, 'did not arrive')}", "failed", 1)
        return None

    def _missing(self, now: float, verb: str) -> str:
        """Which ranks did not reach the collective the others wait in, and where they were."""
        if self.rank != 0:
            return f"rank 0 did not end the job, so rank {self.rank} does"
        missing = []
        for rank in range(self.comm.size):
            beat = self.beats.get(rank)
            if beat is None:
                missing.append(f"rank {rank} (never heard from)")
            elif now - beat.heard >= SILENT_S:
                missing.append(f"rank {rank} at {_where(beat.step)} (silent for {now - beat.heard:.0f} s)")
            elif not beat.waiting:
                missing.append(f"rank {rank} at {_where(beat.step)} (busy outside MPI)")
        if not missing:
            steps = sorted({b.step for b in self.beats.values()})
            return f"every rank waits in a collective (at {', '.join(_where(s) for s in steps)})"
        return f"{', '.join(missing)} {verb}"

    def _end(self, reason: str, status: str, code: int) -> None:
        """Rank 0: mark the file, drop the lock, one line, abort; other ranks: one line, abort."""
        said = self._leave(status, reason) if self.rank == 0 else None
        write_line(f"edgempi: {reason}" + (f"; {said}" if said else ""))
        abort(self.comm, code, quiet=True)

    def _leave(self, status: str, reason: str) -> str:
        """Rank 0's file and lock, left within CLEANUP_S (a main thread stuck inside HDF5 would
        hold its lock for ever)."""
        leave = self.leave
        if leave is None:
            return "nothing was written"
        said = ["the results file could not be marked in time"]

        def work() -> None:
            said[0] = leave(status, reason)

        helper = threading.Thread(target=work, daemon=True)
        helper.start()
        helper.join(CLEANUP_S)
        return said[0]


def _drain() -> None:
    """Note the signals the interpreter wrote to the wakeup pipe (its Python-level handler may
    not run for a long time: the main thread may be stuck in C)."""
    assert _wakeup is not None
    try:
        data = os.read(_wakeup, 512)
    except BlockingIOError:
        return
    for signum in data:
        if signum in STOP_SIGNALS and not _received:
            _received.append((signum, time.monotonic()))


def _where(step: int) -> str:
    return f"step {step}" if step >= 0 else "start-up"
