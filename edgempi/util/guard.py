"""Run a file reader with a deadline, so a damaged file cannot hang the command that reads it.

HDF5 in SWMR read mode (the only way to open a file whose writer was killed) retries a read
whose metadata checksum fails, for minutes, because a live writer may be halfway through
rewriting it; inside the library, holding h5py's global lock, where no thread can stop it.
So the read runs in a child process that is killed at the deadline: a forked copy of this
process where that is cheap (the analysis commands: a few milliseconds per file), and a
fresh interpreter where MPI is running, since forking an MPI process is unsafe on some
interconnects. Only plain data crosses back (the child is our own code, so its pickle is
trusted).
"""
from __future__ import annotations

import importlib
import os
import pickle
import select
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

DEFAULT_TIMEOUT_S = float(os.environ.get("EDGEMPI_READ_TIMEOUT_S", "10"))
STARTUP_S = 30.0  # a fresh interpreter's imports, on a loaded node or a slow shared file system
PACKAGE_PARENT = str(Path(__file__).resolve().parent.parent)


class Timeout(RuntimeError):
    """The reader did not answer in time; the file is most likely damaged."""


def call(target: str, *args: Any, timeout: float = DEFAULT_TIMEOUT_S) -> Any:
    """``module:function(*args)`` in a child process; its exception is re-raised here.

    Raises :class:`Timeout` if the child has not answered within ``timeout`` seconds.
    """
    if "edgempi.comm" in sys.modules:  # MPI is initialised: exec, never a bare fork
        status, value = _spawned(target, args, timeout)
    else:
        status, value = _forked(target, args, timeout)
    if status == "error":
        raise value
    return value


def _answer(target: str, args: tuple[Any, ...]) -> bytes:
    """The child's reply: ("ok", result) or ("error", exception), pickled."""
    module, _, name = target.partition(":")
    try:
        reply: tuple[str, Any] = ("ok", getattr(importlib.import_module(module), name)(*args))
    except Exception as exc:  # handed to the parent, which raises it
        reply = ("error", exc)
    try:
        return pickle.dumps(reply)
    except Exception as exc:  # an exception type that does not pickle: keep its message
        return pickle.dumps(("error", RuntimeError(f"{type(reply[1]).__name__}: {reply[1]} ({exc})")))


def _forked(target: str, args: tuple[Any, ...], timeout: float) -> tuple[str, Any]:
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: answer and leave without running the parent's exit handlers
        os.close(read_end)
        try:
            with os.fdopen(write_end, "wb") as out:
                out.write(_answer(target, args))
        finally:
            os._exit(0)
    os.close(write_end)
    chunks, deadline = [], time.monotonic() + timeout
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([read_end], [], [], left)[0]:
                os.kill(pid, signal.SIGKILL)
                raise Timeout(f"no answer within {timeout:g} s")
            chunk = os.read(read_end, 1 << 20)
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(read_end)
        os.waitpid(pid, 0)
    if not chunks:
        raise Timeout("the reader died without an answer")
    return pickle.loads(b"".join(chunks))


def _spawned(target: str, args: tuple[Any, ...], timeout: float) -> tuple[str, Any]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [PACKAGE_PARENT, os.environ.get("PYTHONPATH")])))
    for var in [v for v in env if v.startswith(("PMI_", "PMIX_", "OMPI_", "HYDRA_", "MPI_"))]:
        del env[var]  # the child is no MPI process
    try:
        proc = subprocess.run([sys.executable, "-m", "edgempi.util.guard", repr(timeout)],
                              input=pickle.dumps((target, args)), capture_output=True,
                              timeout=timeout + STARTUP_S, env=env)
    except subprocess.TimeoutExpired as exc:
        raise Timeout(f"no answer within {timeout + STARTUP_S:g} s") from exc
    if proc.returncode == -signal.SIGALRM:  # the child's own deadline, counted after its imports
        raise Timeout(f"no answer within {timeout:g} s")
    if proc.returncode != 0 or not proc.stdout:
        reason = proc.stderr.decode(errors="replace").strip().splitlines()[-1:] or [f"exit {proc.returncode}"]
        raise Timeout(f"the reader failed ({reason[0]})")
    return pickle.loads(proc.stdout)


if __name__ == "__main__":
    call_args = pickle.loads(sys.stdin.buffer.read())
    importlib.import_module(call_args[0].partition(":")[0])
    # The deadline starts once the interpreter and the reader's imports are up; SIGALRM's
    # default action ends the process even inside a hung HDF5 call.
    signal.setitimer(signal.ITIMER_REAL, float(sys.argv[1]))
    answer = _answer(*call_args)
    signal.setitimer(signal.ITIMER_REAL, 0)
    sys.stdout.buffer.write(answer)
