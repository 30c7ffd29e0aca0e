"""Where the ``mpiexec`` of this Python is: the one beside the interpreter first (the ``mpich``
wheel puts it in the virtual environment's ``bin``, which is on PATH only when the environment
is activated), then PATH's. The benchmarks that start MPI jobs of their own (and the tests) use
it, so ``.venv/bin/python benchmarks/...`` works without activating anything."""
from __future__ import annotations

import shutil
import sys
from pathlib import Path


def mpiexec() -> str | None:
    """The path of ``mpiexec``, or None when there is none."""
    return shutil.which("mpiexec", path=str(Path(sys.executable).parent)) or shutil.which("mpiexec")
