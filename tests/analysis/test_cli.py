"""The plot/report/info argument handlers, as edgempi/cli.py will call them."""
from __future__ import annotations

import argparse
from pathlib import Path

import pytest
from runfiles import config, eval_curve, write_run

from edgempi.analysis import cli


def parse(add, argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    add(p)
    return p.parse_args(argv)


@pytest.fixture
def results(tmp_path: Path) -> Path:
    write_run(tmp_path / "r" / "a.h5", config("fedavg"), eval_curve([0.5, 0.9]))
    write_run(tmp_path / "r" / "b.h5", config("large_batch"), eval_curve([0.5, 0.7, 0.85], rounds_per_eval=100))
    return tmp_path / "r"


def test_report_plot_info(results: Path, tmp_path: Path, capsys) -> None:
    args = parse(cli.add_report_arguments, [str(results), "--target", "80", "--baseline", "algorithm.name=large_batch",
                                            "--format", "csv"])
    assert cli.cmd_report(args) == 0
    out = capsys.readouterr().out
    assert out.startswith("run,method,") and "a,fedavg," in out
    args = parse(cli.add_plot_arguments, [str(results), "--x", "bytes", "--group-by", "algorithm.name",
                                          "-o", str(tmp_path / "f.png")])
    assert cli.cmd_plot(args) == 0 and (tmp_path / "f.png").stat().st_size > 10_000
    assert cli.cmd_info(parse(cli.add_info_arguments, [str(results / "a.h5")])) == 0
    assert "fedavg: lenet5" in capsys.readouterr().out


def test_bad_input_is_a_value_error_naming_it(tmp_path: Path) -> None:
    (tmp_path / "x.h5").write_text("no")
    with pytest.raises(ValueError, match="no readable results files"):
        cli.cmd_report(parse(cli.add_report_arguments, [str(tmp_path), "--target", "0.8"]))
    with pytest.raises(ValueError, match="x.h5: unreadable HDF5"):
        cli.cmd_info(parse(cli.add_info_arguments, [str(tmp_path / "x.h5")]))


def test_info_names_bytes_as_progress_and_report_do(results: Path, capsys) -> None:
    cli.cmd_info(parse(cli.add_info_arguments, [str(results / "a.h5")]))
    out = capsys.readouterr().out
    assert "bytes up 24.5 kB, down 24.5 kB, control 0 B, total 49 kB" in out  # /steps' last row
