"""Every test module, in whatever folder, imports the shared helpers of tests/ (helpers.py,
fake data writers) without a package: the folder is put on the path once, here. The inflated
copies of IDX files that runs keep (``edgempi.data.inflated``) go to a folder of this test
session, never to the user's cache, and every run the tests start (MPI ranks included) uses it."""
import os
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

_CACHE = tempfile.mkdtemp(prefix="edgempi-test-cache-")
os.environ["EDGEMPI_CACHE"] = _CACHE


def pytest_unconfigure(config: object) -> None:
    shutil.rmtree(_CACHE, ignore_errors=True)
