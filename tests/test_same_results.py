"""benchmarks/same_results.py: the before/after comparison that shows a restructuring kept behaviour."""
from __future__ import annotations

import pathlib
import sys

import h5py
import numpy as np
import pytest
import yaml
from helpers import ROOT

from edgempi.config import from_dict

sys.path.insert(0, str(ROOT / "benchmarks"))
import same_results  # noqa: E402


def write(folder: pathlib.Path, name: str, loss: list[float], wall: list[float], extra: bool = False) -> None:
    folder.mkdir(exist_ok=True)
    with h5py.File(folder / f"{name}.h5", "w") as f:
        f["steps/loss"] = np.array(loss, np.float32)
        f["steps/wall_s"] = np.array(wall)
        f["steps/sim_s"] = np.array(wall)
        if extra:
            f["evals/ctrl_bytes"] = np.zeros(2, np.int64)
        f.attrs["status"] = "completed"


@pytest.fixture
def before(tmp_path: pathlib.Path) -> pathlib.Path:
    write(tmp_path / "a", "fedavg", [2.3, 1.9], [0.1, 0.2])
    write(tmp_path / "a", "strag", [2.3, 1.9], [0.1, 0.2])
    return tmp_path / "a"


def test_timings_may_differ_the_rest_may_not(before: pathlib.Path, tmp_path: pathlib.Path, capsys) -> None:
    write(tmp_path / "b", "fedavg", [2.3, 1.9], [0.5, 0.9])
    write(tmp_path / "b", "strag", [2.3, 1.9], [0.1, 0.2])
    assert same_results.compare(before, tmp_path / "b", set()) == 0
    write(tmp_path / "b", "fedavg", [2.3, 1.8], [0.1, 0.2])
    assert same_results.compare(before, tmp_path / "b", set()) == 1
    assert "fedavg.h5: steps/loss differs" in capsys.readouterr().out


def test_a_simulated_clock_from_the_config_alone_must_match(before: pathlib.Path, tmp_path: pathlib.Path) -> None:
    write(tmp_path / "b", "fedavg", [2.3, 1.9], [0.1, 0.2])
    write(tmp_path / "b", "strag", [2.3, 1.9], [0.1, 0.3])  # sim_s (and wall_s) moved
    assert same_results.compare(before, tmp_path / "b", set()) == 1


def test_new_columns_only_when_named_and_missing_files_count(before: pathlib.Path, tmp_path: pathlib.Path) -> None:
    write(tmp_path / "b", "fedavg", [2.3, 1.9], [0.1, 0.2], extra=True)
    assert same_results.compare(before, tmp_path / "b", {"evals/ctrl_bytes"}) == 1  # strag.h5 is missing
    write(tmp_path / "b", "strag", [2.3, 1.9], [0.1, 0.2], extra=True)
    assert same_results.compare(before, tmp_path / "b", {"evals/ctrl_bytes"}) == 0
    assert same_results.compare(before, tmp_path / "b", set()) == 2


def test_every_run_names_a_config_of_the_repository() -> None:
    for ranks, config, _ in same_results.RUNS.values():
        assert ranks >= 1 and (ROOT / config).is_file()


def test_every_run_is_fixed_by_its_config_and_seed() -> None:
    """A run whose config lets the code decide from timings (``parallel.groups: auto`` plans the
    spatial layers from measured layer times) could differ between two runs of one code."""
    for name, (_, config, overrides) in same_results.RUNS.items():
        cfg = from_dict(yaml.safe_load((ROOT / config).read_text()), overrides)
        assert cfg.parallel.mode != "spatial" or cfg.parallel.groups != "auto", name
