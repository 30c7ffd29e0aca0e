"""Readers take every config shape the suite writes and refuse hostile stored configs in one line,
still reading the other files of a folder."""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import pytest
from runfiles import config, eval_curve, legend, write_run
from test_cli import parse

from edgempi.analysis import cli, load_runs
from edgempi.analysis.plot import figure
from edgempi.analysis.report import report

SPATIAL = {"mode": "spatial", "grid": [1, 2], "layers": 2, "groups": [[0, 0], [1, 1]], "devices_per_rank": 1,
           "batched": "auto"}
BOMB = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{c}: &{c} [{', '.join([f'*{p}'] * 10)}]\n" for p, c in zip("abcdef", "bcdefg"))  # 10^7 values


@pytest.fixture
def spatial_runs(tmp_path: Path) -> Path:
    """Two spatial runs with explicit layer groups (nested lists) and a drift section (a mapping
    with lists), as docs/methods.md recommends, differing in their groups."""
    drift = {"steps": [100], "kind": "swap_classes", "fraction": 1.0, "classes": [0, 1]}
    for name, groups in (("one", [[0, 0], [1, 1]]), ("two", [[0, 1]])):
        cfg = config("large_batch", parallel={**SPATIAL, "groups": groups}, data={"name": "fashion-mnist",
                                                                                   "drift": drift})
        write_run(tmp_path / "r" / f"{name}.h5", cfg, eval_curve([0.5, 0.9]))
    return tmp_path / "r"


def test_report_plot_info_and_group_by_take_nested_lists(spatial_runs: Path, capsys) -> None:
    runs = load_runs([spatial_runs])
    table = report(runs, 0.8)
    assert "| [[0,0],[1,1]] |" in table and "| [[0,1]] |" in table
    fig = figure(runs, "step", "test_acc", group_by="parallel.groups")
    names = legend(fig)
    plt.close(fig)
    assert names == ["groups = [[0,0],[1,1]], n = 1", "groups = [[0,1]], n = 1"]
    fig = figure(runs, "step", "test_acc")
    plt.close(fig)
    assert cli.cmd_report(parse(cli.add_report_arguments, [str(spatial_runs), "--target", "0.8",
                                                           "--group-by", "parallel.groups,data.drift.classes"])) == 0
    assert cli.cmd_info(parse(cli.add_info_arguments, [str(spatial_runs / "one.h5")])) == 0
    assert "groups=[[0,0],[1,1]]" in capsys.readouterr().out


def test_info_takes_folders_and_skips_bad_files_in_one_line_each(spatial_runs: Path, tmp_path: Path, capsys) -> None:
    (spatial_runs / "deep").mkdir()
    (spatial_runs / "deep" / "text.h5").write_text("no")
    assert cli.cmd_info(parse(cli.add_info_arguments, [str(spatial_runs)])) == 0
    out, err = capsys.readouterr()
    assert out.count(": completed (") == 2
    assert err.splitlines() == [f"edgempi: skipping {spatial_runs / 'deep' / 'text.h5'}: unreadable HDF5 "
                                "(Unable to synchronously open file (file signature not found))"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="^no results files"):
        cli.cmd_info(parse(cli.add_info_arguments, [str(tmp_path / "empty")]))


@pytest.mark.parametrize("stored,reason", [
    (BOMB, "its config attribute: expands to more than 100000 values through aliases"),
    ("train: {lr: 0.1}\ntrain: {lr: 0.2}\n", "its config attribute: key 'train' is given twice (lines 1 and 2)"),
    ("a: &a [*a]\n", "its config attribute: expands to more than 100000 values through aliases"),
    ("- 1\n- 2\n", "its config attribute is not a mapping"),
    ("{a: [1, 2\n", "its config attribute: not valid YAML at line 2"),
    (17, "its config attribute is a int, not YAML text"),
])
def test_a_hostile_stored_config_is_one_line_and_the_folder_is_still_read(spatial_runs: Path, capsys, stored,
                                                                           reason) -> None:
    bad = write_run(spatial_runs / "bad.h5", config(), eval_curve([0.5]), config=stored)
    runs = load_runs([spatial_runs])
    assert sorted(r.name for r in runs) == ["one", "two"]
    assert capsys.readouterr().err.splitlines() == [f"edgempi: skipping {bad}: {reason}"]
    assert cli.cmd_info(parse(cli.add_info_arguments, [str(spatial_runs)])) == 0
    out, err = capsys.readouterr()
    assert out.count(": completed (") == 2 and err.splitlines() == [f"edgempi: skipping {bad}: {reason}"]
