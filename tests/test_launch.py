"""The mpiexec that tests and benchmarks start jobs with (benchmarks/launcher.py): the interpreter's own
before PATH's."""
from __future__ import annotations

import sys

from helpers import BENCHMARKS, load_script

launch = load_script(BENCHMARKS / "launcher.py")


def fake_mpiexec(folder):
    folder.mkdir()
    exe = folder / "mpiexec"
    exe.write_text("#!/bin/sh\n")
    exe.chmod(0o755)
    return exe


def test_the_mpiexec_beside_the_interpreter_is_found_without_path(tmp_path, monkeypatch):
    venv = fake_mpiexec(tmp_path / "venv-bin")
    monkeypatch.setattr(sys, "executable", str(tmp_path / "venv-bin" / "python"))
    monkeypatch.setenv("PATH", str(tmp_path / "nothing"))
    assert launch.mpiexec() == str(venv)
    other = fake_mpiexec(tmp_path / "path-bin")
    monkeypatch.setenv("PATH", str(tmp_path / "path-bin"))
    assert launch.mpiexec() == str(venv)  # the interpreter's own wins over PATH's
    (tmp_path / "venv-bin" / "mpiexec").unlink()
    assert launch.mpiexec() == str(other)
    monkeypatch.setenv("PATH", str(tmp_path / "nothing"))
    assert launch.mpiexec() is None
