"""Which model a run scored: tables and figures say it, refuse to mix, and charge an average its sync."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from runfiles import append, config, create, eval_curve, step_curve, write_run

from edgempi.analysis import load_runs, plot, report
from edgempi.analysis.report import to_target

SYNC = 250_000  # bytes one device sends (and receives) in a weight sync


def average_run(path: Path, sync_steps: list[float]) -> Path:
    """A fedavg run scored on the devices' average, evaluated every 100 steps, synced at ``sync_steps``."""
    with create(path, config("fedavg"), syncs=("step", "participants"), eval_model="average",
                sync_bytes=SYNC) as f:
        append(f, "steps", step_curve())
        append(f, "evals", eval_curve([0.5, 0.7, 0.81, 0.85]))
        append(f, "syncs", {"step": np.asarray(sync_steps, float), "participants": np.full(len(sync_steps), 4.0)})
    return path


def test_an_average_between_syncs_is_charged_one_sync(tmp_path: Path) -> None:
    # 81% first at step 300; the last sync was at 250: the scored average costs one more sync.
    (run,) = load_runs([average_run(tmp_path / "between.h5", [250])])
    cost = to_target(run, 0.8)
    assert cost["round"] == 30 + 1
    assert cost["bytes_up"] == 15_000 + SYNC and cost["bytes_down"] == 15_000 + SYNC
    assert cost["bytes"] == 30_000 + 2 * SYNC


def test_an_average_at_a_sync_is_what_the_sync_paid_for(tmp_path: Path) -> None:
    (run,) = load_runs([average_run(tmp_path / "at.h5", [100, 200, 300])])
    assert to_target(run, 0.8)["round"] == 30 and to_target(run, 0.8)["bytes"] == 30_000


def test_a_sync_nobody_reported_to_pays_for_nothing(tmp_path: Path) -> None:
    path = tmp_path / "empty.h5"
    with create(path, config("fedavg"), syncs=("step", "participants"), eval_model="average", sync_bytes=SYNC) as f:
        append(f, "steps", step_curve())
        append(f, "evals", eval_curve([0.81]))
        append(f, "syncs", {"step": np.array([100.0]), "participants": np.array([0.0])})
    (run,) = load_runs([path])
    assert to_target(run, 0.8)["round"] == 10 + 1


def test_global_runs_are_never_charged(tmp_path: Path) -> None:
    write_run(tmp_path / "g.h5", config("fedavg"), eval_curve([0.5, 0.81]), eval_model="global")
    (run,) = load_runs([tmp_path])
    assert to_target(run, 0.8)["round"] == 20


def test_strict_target_is_the_first_evaluation_above_it(tmp_path: Path) -> None:
    write_run(tmp_path / "g.h5", config("fedavg"), eval_curve([0.5, 0.8, 0.9]))
    (run,) = load_runs([tmp_path])
    assert to_target(run, 0.8)["round"] == 20
    assert to_target(run, 0.8, strict=True)["round"] == 30
    assert "reached >80%" in report([run], 0.8, strict=True)


def test_report_and_plot_refuse_runs_scored_differently(tmp_path: Path) -> None:
    write_run(tmp_path / "g.h5", config("fedavg"), eval_curve([0.5, 0.81]), eval_model="global")
    average_run(tmp_path / "a.h5", [250])
    runs = load_runs([tmp_path])
    with pytest.raises(ValueError, match="eval_model: these runs scored different models") as exc:
        report(runs, 0.8)
    assert "\n" not in str(exc.value)
    with pytest.raises(ValueError, match="--mixed-eval"):
        plot(runs, "bytes", "test_acc", out=tmp_path / "p.png")
    table = report(runs, 0.8, mixed_eval=True, fmt="csv")
    assert {line.split(",")[2] for line in table.splitlines()[1:]} == {"average", "global"}
    assert plot(runs, "bytes", "test_acc", out=tmp_path / "p.png", mixed_eval=True).exists()


def test_the_table_says_which_model_was_scored(tmp_path: Path) -> None:
    average_run(tmp_path / "a.h5", [250])
    text = report(load_runs([tmp_path]), 0.8)
    assert "| scored |" in text and "| average |" in text
    assert "Scored average: the devices' average, charged one weight sync" in text


def test_files_before_the_attribute_scored_the_average(tmp_path: Path) -> None:
    write_run(tmp_path / "old.h5", config("fedavg"), eval_curve([0.81]),
              evaluated_model="average weights and BatchNorm statistics")
    write_run(tmp_path / "lb.h5", config("large_batch"), eval_curve([0.81]), evaluated_model="shared model")
    with pytest.raises(ValueError, match="scored different models"):
        report(load_runs([tmp_path]), 0.8)
