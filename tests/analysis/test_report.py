"""The comparison table on hand-made curves whose answers are known."""
from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import pytest
from runfiles import OLD_EVAL_COLUMNS, config, eval_curve, step_curve, stored, write_run

from edgempi.analysis import load_runs, report
from edgempi.analysis.report import to_target


@pytest.fixture
def runs(tmp_path: Path):
    # fedavg first reaches 80% at its 4th evaluation: epoch 4, 40 rounds, 40 kB, 8 s wall, 20 s simulated.
    write_run(tmp_path / "a_fedavg.h5", config("fedavg", lr=0.1), eval_curve([0.5, 0.7, 0.79, 0.81, 0.85]))
    # large_batch reaches exactly 80% at its 2nd: 200 rounds, 200 kB → fedavg used 5x fewer bytes.
    write_run(tmp_path / "b_large.h5", config("large_batch", lr=0.1),
              eval_curve([0.6, 0.8, 0.9], rounds_per_eval=100))
    # never gets there.
    write_run(tmp_path / "c_slow.h5", config("fedavg", lr=0.01), eval_curve([0.3, 0.5, 0.6]))
    return load_runs([tmp_path])


def parse(text: str) -> dict[str, dict[str, str]]:
    return {row["run"]: row for row in csv.DictReader(io.StringIO(text))}


def test_costs_at_first_evaluation_reaching_target(runs) -> None:
    a, b, c = runs
    assert to_target(a, 0.8) == {"epoch": 4, "round": 40, "bytes_up": 20_000, "bytes_down": 20_000, "ctrl_bytes": 0,
                                 "bytes": 40_000, "time": 8, "simtime": 20}
    assert to_target(b, 0.8)["round"] == 200  # reaching the target exactly counts
    assert to_target(c, 0.8) is None


def test_csv_report_numbers_and_baseline_ratio(runs) -> None:
    rows = parse(report(runs, 0.8, baseline="algorithm.name=large_batch", fmt="csv"))
    a, b, c = rows["a_fedavg"], rows["b_large"], rows["c_slow"]
    assert (a["method"], a["train.lr"], a["final_acc"], a["best_acc"]) == ("fedavg", "0.1", "0.85", "0.85")
    assert (a["epochs_to_target"], a["rounds_to_target"], a["bytes_to_target"]) == ("4", "40", "40000")
    assert (a["bytes_up_to_target"], a["bytes_down_to_target"], a["ctrl_bytes_to_target"]) == ("20000", "20000", "0")
    assert (a["wall_s_to_target"], a["sim_s_to_target"]) == ("8", "20")
    assert float(a["times_fewer_bytes_than_baseline"]) == pytest.approx(5.0)
    assert float(b["times_fewer_bytes_than_baseline"]) == pytest.approx(1.0)
    assert c["reached"] == "not reached" and c["rounds_to_target"] == "" and c["times_fewer_bytes_than_baseline"] == ""
    assert c["best_acc"] == "0.6"


def test_large_batch_against_fedavg_shows_only_what_tells_them_apart(tmp_path: Path) -> None:
    """The quickstart pair as the runner stores it: FedAvg's defaults (server_momentum of an
    unused server optimizer, participation 1, ...) and Large Batch's (bucket_mb) are no columns;
    FedAvg's sync period is. Everything on request."""
    write_run(tmp_path / "lb.h5", stored(config("large_batch")), eval_curve([0.5, 0.8], rounds_per_eval=100))
    write_run(tmp_path / "fedavg.h5", stored(config("fedavg")), eval_curve([0.5, 0.8]))
    runs = load_runs([tmp_path])
    text = report(runs, 0.8, baseline="algorithm.name=large_batch")
    header, _, *cells = [[c.strip() for c in line.strip("|").split("|")] for line in text.splitlines()
                         if line.startswith("|")]
    costs = [f"{c} to 80%" for c in ("epochs", "rounds", "bytes up", "bytes down", "bytes control", "bytes total",
                                    "wall s", "sim s")]
    assert header == ["run", "method", "local_steps", "scored", "status", "final acc", "best acc", "reached 80%",
                      *costs, "× fewer bytes than baseline"]
    assert [row[:3] + row[-1:] for row in cells] == [["fedavg", "fedavg", "10", "10×"],
                                                     ["lb", "large_batch", "-", "1×"]]
    columns = next(csv.reader(io.StringIO(report(runs, 0.8, baseline="algorithm.name=large_batch", fmt="csv"))))
    assert columns[:4] == ["run", "method", "algorithm.local_steps", "eval_model"]
    assert columns[-1] == "times_fewer_bytes_than_baseline"
    everything = report(runs, 0.8, fmt="csv", all_settings=True).splitlines()[0].split(",")
    assert {"algorithm.server_momentum", "algorithm.participation", "algorithm.bucket_mb"} <= set(everything)


def test_markdown_report_says_not_reached(runs) -> None:
    text = report(runs, 80, baseline="algorithm.name=large_batch")  # a percentage works too
    lines = {line.split("|")[1].strip(): line for line in text.splitlines() if line.startswith("| ")}
    assert "lr" in lines["run"] and "rounds to 80%" in lines["run"]  # only differing keys are columns
    assert "batch_size" not in lines["run"]
    assert "not reached" in lines["c_slow"]
    assert "| 40 |" in lines["a_fedavg"] and "40 kB" in lines["a_fedavg"] and "5×" in lines["a_fedavg"]
    assert "Baseline algorithm.name=large_batch: 200 kB total to 80%." in text
    for header in ("bytes up to 80%", "bytes down to 80%", "bytes control to 80%", "bytes total to 80%"):
        assert header in lines["run"]


def test_groups_average_over_seeds_that_reached(tmp_path: Path) -> None:
    write_run(tmp_path / "s0.h5", config("fedavg", seed=0), eval_curve([0.5, 0.7, 0.79, 0.81]))  # 40 rounds
    write_run(tmp_path / "s1.h5", config("fedavg", seed=1), eval_curve([0.7, 0.85]))  # 20 rounds
    write_run(tmp_path / "s2.h5", config("fedavg", seed=2), eval_curve([0.5, 0.6]))  # never
    write_run(tmp_path / "l0.h5", config("large_batch", seed=0), eval_curve([0.5]))  # never
    text = report(load_runs([tmp_path]), 0.8, fmt="csv", group_by="algorithm.name")
    rows = {row["group"]: row for row in csv.DictReader(io.StringIO(text))}
    assert rows["fedavg"]["runs"] == "3" and rows["fedavg"]["reached"] == "2/3"
    assert float(rows["fedavg"]["rounds_to_target"]) == 30
    assert float(rows["fedavg"]["final_acc"]) == pytest.approx((0.81 + 0.85 + 0.6) / 3)
    assert rows["large_batch"]["reached"] == "not reached"
    assert "seed" not in rows["fedavg"]  # varies inside groups: not a column


def test_bad_arguments_name_the_problem(runs) -> None:
    with pytest.raises(ValueError, match="baseline: no run has algorithm.name=sgd"):
        report(runs, 0.8, baseline="algorithm.name=sgd")
    with pytest.raises(ValueError, match="baseline: expected KEY=VALUE"):
        report(runs, 0.8, baseline="fedavg")
    with pytest.raises(ValueError, match="target accuracy"):
        report(runs, 0)
    with pytest.raises(ValueError, match="format"):
        report(runs, 0.8, fmt="xlsx")
    with pytest.raises(ValueError, match="group_by: no run has key 'train.nope'"):
        report(runs, 0.8, group_by="train.nope")


def test_baseline_that_never_reached_gives_no_ratio(runs) -> None:
    rows = parse(report(runs, 0.8, baseline="train.lr=0.01", fmt="csv"))
    assert rows["a_fedavg"]["times_fewer_bytes_than_baseline"] == ""
    assert "never reached 80%" in report(runs, 0.8, baseline="train.lr=0.01")


def test_control_bytes_count_in_the_total(tmp_path: Path) -> None:
    """A file written before /evals had ctrl_bytes: the control traffic at an evaluation comes
    from /steps."""
    steps = step_curve(301)
    steps["ctrl_bytes"] = steps["step"] * 8.0  # 8 control bytes per step, as linear FDA sends
    write_run(tmp_path / "fda.h5", config("fda"), eval_curve([0.5, 0.9]), steps=steps, eval_columns=OLD_EVAL_COLUMNS)
    (run,) = load_runs([tmp_path])
    cost = to_target(run, 0.8)  # the 2nd evaluation, at step 200
    assert cost["ctrl_bytes"] == 1600 and cost["bytes"] == cost["bytes_up"] + cost["bytes_down"] + 1600
    row = parse(report([run], 0.8, fmt="csv"))["fda"]
    assert row["ctrl_bytes_to_target"] == "1600" and row["bytes_to_target"] == str(int(cost["bytes"]))


def test_control_bytes_of_an_evaluation_are_its_own_column(tmp_path: Path) -> None:
    """/evals holds ctrl_bytes: report takes it from there, not from /steps."""
    steps = step_curve(301)
    steps["ctrl_bytes"] = steps["step"] * 8.0
    evals = eval_curve([0.5, 0.9])
    evals["ctrl_bytes"] = np.array([900.0, 1700.0])  # what the run counted at its evaluations
    write_run(tmp_path / "fda.h5", config("fda"), evals, steps=steps)
    (run,) = load_runs([tmp_path])
    assert to_target(run, 0.8)["ctrl_bytes"] == 1700
