"""benchmarks/fda_repro.py as a user meets it: its help shows each example on its own lines, and a
table asked for where no run has finished says so instead of printing empty tables."""
from __future__ import annotations

import subprocess
import sys

from helpers import ROOT, child_env

SCRIPT = ROOT / "benchmarks" / "fda_repro.py"


def repro(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, env=child_env(),
                          timeout=120)


def test_help_keeps_the_continued_example_on_two_lines() -> None:
    proc = repro("--help")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    continued = next(i for i, line in enumerate(lines) if "mnist-grid.yaml" in line)
    assert lines[continued].rstrip().endswith("\\")
    assert lines[continued + 1].lstrip().startswith("--out results/fda-mnist")


def test_table_only_without_results_says_so_and_fails(tmp_path) -> None:
    proc = repro("--devices", "4", "--table-only", "--out", str(tmp_path))
    assert proc.returncode == 1 and proc.stdout == ""
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("fda_repro: none of the ")
    assert line.endswith(f"in {tmp_path}: run without --table-only first")


PAPER = ROOT / "benchmarks" / "configs" / "fda" / "paper"


def test_the_paper_grid_runs_each_row_with_its_own_config_and_stops_above_the_target() -> None:
    proc = repro("--grid", str(PAPER / "grid.yaml"), "--devices", "5", "--max-ranks", "1", "--dry-run")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 2 + 2 * 7  # Synchronous, FedAdam, and both FDA variants over the paper's Θ grid
    for line in lines:
        method = line.split(":")[0].split("-")[2]
        assert f"paper/{method}.yaml" in line and "train.stop_at_acc=0.9801" in line, line
        assert "parallel.devices_per_rank=5" in line


def test_every_paper_config_is_valid_and_as_the_authors_ran_it() -> None:
    from edgempi.config import load

    for name in ("synchronous", "fedadam", "linear_fda", "sketch_fda"):
        cfg = load(PAPER / f"{name}.yaml")
        assert (cfg.model.name, cfg.data.name, cfg.data.partition, cfg.data.normalize) == \
            ("lenet5_keras", "mnist", "contiguous", False)
        assert cfg.train.batch_size == 32 and cfg.algorithm.average_buffers is False
    fedadam = load(PAPER / "fedadam.yaml")
    assert (fedadam.train.optimizer, fedadam.train.lr, fedadam.train.eval_model) == ("sgd", 0.01, "global")
    a = fedadam.algorithm
    assert (a.server_optimizer, a.server_lr, a.server_beta2, a.server_eps, a.server_bias_correction) == \
        ("adam", 0.001, 0.999, 1e-7, True)
    fda = load(PAPER / "linear_fda.yaml")
    assert (fda.train.optimizer, fda.train.adam_eps, fda.train.eval_model, fda.train.eval_every) == \
        ("adam", 1e-7, "average", 375)
