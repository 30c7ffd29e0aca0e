"""The quickstart as a user runs it: real Fashion-MNIST, LeNet-5, 4 devices, one HDF5 file."""
from __future__ import annotations

import json

import h5py
import pytest
import yaml
from helpers import FASHION, ROOT, edgempi, load_script

from edgempi.record import EVAL_COLUMNS, SCHEMA, STEP_COLUMNS


@pytest.mark.skipif(not FASHION.is_dir(), reason="apt-get install dataset-fashion-mnist")
@pytest.mark.parametrize("algorithm", ["large_batch", "fedavg"])
def test_quickstart_trains_on_real_data(tmp_path, algorithm):
    proc = edgempi("run", str(ROOT / "benchmarks" / "configs" / "quickstart.yaml"), "--out", str(tmp_path),
                   "--set", "train.epochs=null", "--set", "train.steps=200", "--set", "train.eval_every=100",
                   "--set", f"algorithm.name={algorithm}", ranks=4, timeout=300)
    assert proc.returncode == 0, proc.stderr
    path = proc.stdout.strip().splitlines()[-1]
    assert path.endswith(".h5") and str(tmp_path) in path
    assert "edgempi: step 200/200" in proc.stderr  # one log line per evaluation when not a terminal
    with h5py.File(path, "r") as f:
        attrs = f.attrs
        assert attrs["schema"] == SCHEMA and attrs["status"] == "completed"
        assert attrs["world_size"] == 4 and attrs["algorithm"] == algorithm
        assert yaml.safe_load(attrs["config"])["algorithm"]["name"] == algorithm
        assert set(json.loads(attrs["versions"])) >= {"python", "torch", "mpi4py", "mpi"}
        assert attrs["created"] <= attrs["finished"]
        assert set(f["steps"]) == set(STEP_COLUMNS) and set(f["evals"]) == set(EVAL_COLUMNS)
        assert f["partition/counts"].shape == (4, 10) and f["partition/counts"][()].sum() == 60000
        evals = {c: f["evals"][c][()] for c in EVAL_COLUMNS}
    assert list(evals["step"]) == [0, 100, 200]
    assert evals["test_acc"][0] < 0.3 < 0.6 < evals["test_acc"][-1]
    assert all(evals["sim_s"][1:] > 0) and all(evals["wall_s"][1:] > 0)


def test_quickstart_check_reads_every_promised_row():
    """benchmarks/quickstart_check.py compares against benchmarks/docs/quickstart.md's table: both rows parse,
    with the rounds that 5 epochs of 4 devices imply and the accuracy as the range measured across
    CPUs; an accuracy within the tolerance of that range passes, one further out is drift."""
    check = load_script(ROOT / "benchmarks" / "quickstart_check.py")
    rows = check.expected_rows()
    assert set(rows) == {"large_batch", "fedavg"}
    steps = 5 * (60000 // 4 // 32)
    assert rows["large_batch"]["rounds"] == (steps, steps) and rows["fedavg"]["rounds"] == (steps // 10, steps // 10)
    low, high = rows["large_batch"]["final test accuracy"]
    assert 80 < low < high < 90
    tolerance = check.TOLERANCE

    def drifted(accuracy: float) -> bool:
        return check.drifted("final test accuracy", (low, high), accuracy, tolerance)

    assert not any(drifted(a) for a in (low, high, (low + high) / 2, low - tolerance + 0.01, high + tolerance - 0.01))
    assert drifted(low - tolerance - 0.01) and drifted(high + tolerance + 0.01)
    assert check.drifted("rounds", (steps, steps), steps + 1, tolerance)
    assert not check.drifted("wall time", (25, 25), 90, tolerance)
    assert check.cpu_model().strip()


def test_the_readme_promises_what_the_quickstart_page_measured():
    """README.md's "What you should see" repeats the quickstart page's accuracy ranges, rounds and
    bytes, so a re-measured row changed on one page and not on the other fails here."""
    check = load_script(ROOT / "benchmarks" / "quickstart_check.py")
    section = (ROOT / "README.md").read_text(encoding="utf-8").split("\n## What you should see\n", 1)[1]
    lines = [line for line in section.split("\n## ", 1)[0].splitlines() if line.startswith("| ")][2:]
    promised = {"large_batch" if "Large Batch" in line else "fedavg": [check._range(c) for c in line.split("|")[2:5]]
                for line in lines}
    measured = {method: [row[c] for c in check.COLUMNS[:3]] for method, row in check.expected_rows().items()}
    assert promised == measured
