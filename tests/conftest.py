"""The collective tests in tests/mpi run under mpiexec (see test_mpi_suite.py), not serially."""
from pathlib import Path


def pytest_ignore_collect(collection_path: Path, config) -> bool:
    return "mpi" in collection_path.parts and not config.getoption("--with-mpi", default=False)
