"""Sweep expansion, stable point ids, and what --task N does with leftovers and world sizes."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import pytest
import yaml
from analysis.runfiles import write_run

from edgempi import sweep as sw


def write_sweep(tmp_path: Path, **body: Any) -> Path:
    body.setdefault("name", "demo")
    body.setdefault("base", {"train": {"lr": 0.1}, "algorithm": {"name": "large_batch"}})
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(body, sort_keys=False))
    return path


class FakeComm:
    def __init__(self, size: int = 4, rank: int = 0) -> None:
        self.size, self.rank = size, rank

    def allgather_object(self, obj: Any) -> list[Any]:
        return [obj] * self.size


class Recorder:
    """A run_config that records its calls instead of training."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, list[str], Path]] = []

    def __call__(self, config: Any, overrides: list[str], out_file: Path) -> None:
        self.calls.append((config, overrides, out_file))


def test_grid_zip_and_seeds_expand_in_order(tmp_path: Path) -> None:
    path = write_sweep(tmp_path, grid={"algorithm.name": ["fedavg", "large_batch"], "train.lr": [0.1, 0.05]},
                       zip={"algorithm.local_steps": [1, 10], "train.batch_size": [32, 64]}, seeds=[0, 1], ranks=4)
    points = sw.expand(path)
    assert len(points) == 2 * 2 * 2 * 2
    assert [p.index for p in points] == list(range(16))
    assert points[0].overrides == ("algorithm.name=fedavg", "train.lr=0.1", "algorithm.local_steps=1",
                                   "train.batch_size=32", "seed=0")
    assert points[1].overrides[-1] == "seed=1"
    assert points[2].overrides[2:4] == ("algorithm.local_steps=10", "train.batch_size=64")
    assert points[-1].overrides[:2] == ("algorithm.name=large_batch", "train.lr=0.05")
    assert {p.ranks for p in points} == {4}
    assert len({p.id for p in points}) == 16


def test_ids_are_readable_and_stable(tmp_path: Path) -> None:
    one = sw.expand(write_sweep(tmp_path, grid={"algorithm.name": ["fedavg"], "train.lr": [0.1]}, seeds=[1]))
    assert one[0].id.startswith("fedavg_seed-1_lr-0.1-")
    # Same values with keys in another order, more grid values, and another base: same id.
    other = sw.expand(write_sweep(tmp_path, base={"seed": 5},
                                  grid={"train.lr": [0.2, 0.1], "algorithm.name": ["fedavg"]}, seeds=[1, 2]))
    assert one[0].id in {p.id for p in other}
    assert sw.point_id(["train.lr=0.1"], 4) != sw.point_id(["train.lr=0.1"], 8)
    assert "/" not in sw.point_id(["data.root=/tmp/x y"], None)


def test_ids_read_method_seed_and_ranks_first_without_nulls() -> None:
    """The documented order, whatever the order of the keys; a null (a key this point's method does
    not take, in a zip of methods) is left out of the readable part but not of the hash."""
    overrides = ["algorithm.delta=null", "algorithm.name=large_batch", "algorithm.theta=null", "train.epochs=1",
                 "seed=0"]
    pid = sw.point_id(overrides, 2)
    assert pid.startswith("large_batch_seed-0_ranks-2_epochs-1-") and "null" not in pid
    assert sw.point_id(list(reversed(overrides)), 2) == pid
    assert sw.point_id([o for o in overrides if "null" not in o], 2) != pid


def test_ranks_as_a_grid_key(tmp_path: Path) -> None:
    points = sw.expand(write_sweep(tmp_path, grid={"ranks": [2, 4], "train.lr": [0.1, 0.2]}))
    assert [p.ranks for p in points] == [2, 2, 4, 4]
    assert all(not o.startswith("ranks=") for p in points for o in p.overrides)
    assert sw.array_spec(points) == "0-3"
    assert sw.array_spec(points, ranks=4) == "2-3"
    assert sw.array_spec([p for p in points if p.index != 1]) == "0,2-3"


def test_values_round_trip_as_yaml(tmp_path: Path) -> None:
    points = sw.expand(write_sweep(tmp_path, grid={"model.norm": [None, "group"], "train.milestones": [[1, 2]],
                                                   "data.name": ["0.5"]}))
    assert points[0].overrides == ("model.norm=null", "train.milestones=[1, 2]", "data.name='0.5'")
    for o in points[0].overrides:
        key, text = o.split("=", 1)
        assert yaml.safe_load(text) == {"model.norm": None, "train.milestones": [1, 2], "data.name": "0.5"}[key]


@pytest.mark.parametrize("body, message", [
    ({"grid": {"train.lr": []}}, "grid.train.lr: expected a non-empty list"),
    ({"zip": {"a.b": [1, 2], "c.d": [1]}}, "zip: lists differ in length"),
    ({"grid": {"a.b": [1]}, "zip": {"a.b": [2]}}, "zip.a.b: also in grid"),
    ({"grid": {"a.b": [1, 1]}}, "are the same"),
    ({"grid": {"ranks": [0]}}, "grid.ranks[0]: expected a positive integer"),
    ({"grid": {"ranks": [2]}, "ranks": 2}, "ranks: given both"),
    ({"name": "a/b"}, "name: expected a file-name-safe string"),
    ({"base": "nowhere.yaml"}, "base: no config file 'nowhere.yaml'"),
    ({"grids": {}}, "grids: unknown sweep key"),
])
def test_bad_sweeps_name_the_key(tmp_path: Path, body: dict, message: str) -> None:
    with pytest.raises(sw.SweepError, match=message.replace("[", r"\[").replace("]", r"\]")):
        sw.load(write_sweep(tmp_path, **body))


def test_base_path_is_relative_to_the_sweep_file(tmp_path: Path) -> None:
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "q.yaml").write_text("seed: 1\n")
    sweep = sw.load(write_sweep(tmp_path, base="configs/q.yaml", grid={"train.lr": [0.1]}))
    assert Path(sweep.base) == tmp_path / "configs" / "q.yaml"


@pytest.fixture
def demo(tmp_path: Path) -> sw.Sweep:
    return sw.load(write_sweep(tmp_path, grid={"train.lr": [0.1, 0.2, 0.3, 0.4]}, ranks=4))


def test_point_status_reads_the_root_attribute(demo: sw.Sweep, tmp_path: Path) -> None:
    out = tmp_path / "results"
    results = demo.results_dir(out)
    for point, status in zip(demo.points[1:], ("running", "completed", "failed")):
        write_run(demo.results_file(point, out), status=status)
    assert [sw.point_status(results, p) for p in demo.points] == ["missing", "running", "completed", "failed"]
    demo.results_file(demo.points[0], out).write_text("garbage")
    assert sw.point_status(results, demo.points[0]) == "failed"


def test_task_runs_missing_point_and_skips_completed(demo: sw.Sweep, tmp_path: Path) -> None:
    out, run = tmp_path / "results", Recorder()
    decision = sw.run_task(demo, 2, run, FakeComm(4), out=out)
    assert decision.action == "run"
    assert run.calls == [(demo.base, ["train.lr=0.3"], out / "demo" / f"{demo.points[2].id}.h5")]
    write_run(demo.results_file(demo.points[2], out), status="completed")
    assert sw.run_task(demo, 2, run, FakeComm(4), out=out).action == "skip"
    assert len(run.calls) == 1


@pytest.mark.parametrize("status", ["failed", "running"])
def test_leftovers_are_refused_unless_retried(demo: sw.Sweep, tmp_path: Path, status: str) -> None:
    out, run = tmp_path / "results", Recorder()
    leftover = write_run(demo.results_file(demo.points[0], out), status=status)
    with pytest.raises(sw.SweepError, match=f"is a {status} leftover.*--retry"):
        sw.run_task(demo, 0, run, FakeComm(4), out=out)
    assert not run.calls and leftover.exists()
    assert sw.run_task(demo, 0, run, FakeComm(4), retry=True, out=out).action == "run"
    assert len(run.calls) == 1 and not leftover.exists()


def test_wrong_world_size_is_refused(demo: sw.Sweep, tmp_path: Path) -> None:
    run = Recorder()
    with pytest.raises(sw.SweepError, match="needs 4 ranks but the job has 1 .*MPI did not start"):
        sw.run_task(demo, 0, run, FakeComm(1), out=tmp_path)
    with pytest.raises(sw.SweepError, match="needs 4 ranks but the job has 2$"):
        sw.run_task(demo, 0, run, FakeComm(2), out=tmp_path)
    with pytest.raises(sw.SweepError, match="--task 4: the sweep demo has 4 points"):
        sw.run_task(demo, 4, run, FakeComm(4), out=tmp_path)
    assert not run.calls


def test_without_ranks_the_slurm_task_count_is_expected(tmp_path: Path) -> None:
    sweep = sw.load(write_sweep(tmp_path, grid={"train.lr": [0.1]}))
    with pytest.raises(sw.SweepError, match="needs 4 ranks but the job has 1"):
        sw.decide(sweep, 0, 1, out=tmp_path, environ={"SLURM_NTASKS": "4"})
    assert sw.decide(sweep, 0, 1, out=tmp_path, environ={}).action == "run"


def test_only_rank_zero_decides_and_removes(demo: sw.Sweep, tmp_path: Path) -> None:
    out, run = tmp_path / "results", Recorder()
    leftover = write_run(demo.results_file(demo.points[0], out), status="failed")

    class Rank1(FakeComm):
        def allgather_object(self, obj: Any) -> list[Any]:
            assert obj is None  # rank 1 does not decide
            return [sw.decide(demo, 0, 4, retry=True, out=out), obj, obj, obj]

    assert sw.run_task(demo, 0, run, Rank1(4, rank=1), retry=True, out=out).action == "run"
    assert leftover.exists() and len(run.calls) == 1


def test_command_line(demo: sw.Sweep, tmp_path: Path, capsys) -> None:
    p = argparse.ArgumentParser()
    sw.add_arguments(p)
    run = Recorder()
    for argv, expected in ((["--count"], "4"), (["--array"], "0-3"), (["--task", "1"], "demo"),
                             (["--results-dir"], str(tmp_path / "r" / "demo"))):
        args = p.parse_args([str(demo.path), *argv, "--out", str(tmp_path / "r")])
        assert sw.command(args, run, lambda: FakeComm(4)) == 0
        assert expected in capsys.readouterr().out
    args = p.parse_args([str(demo.path), "--list", "--out", str(tmp_path / "r")])
    sw.command(args, run, lambda: FakeComm(4))
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("0\tmissing\t4\tranks-4_lr-0.1-") and lines[0].endswith("train.lr=0.1")


def test_long_ids_keep_whole_pieces_and_stay_unique() -> None:
    overrides = ["algorithm.name=large_batch", "train.lr=0.05", "algorithm.local_steps=5", "train.batch_size=32",
                 "train.eval_every=94", "seed=3"]
    pid = sw.point_id(overrides, 96)
    readable, digest = pid.rsplit("-", 1)
    assert len(readable) <= sw.ID_TEXT and len(digest) == 8
    pieces = ["large_batch", "seed-3", "ranks-96", "local_steps-5", "batch_size-32", "eval_every-94", "lr-0.05"]
    kept = [p for p in pieces if p in readable]
    assert "_".join(kept) == readable  # whole pieces, in order, nothing cut
    assert kept[:3] == ["large_batch", "seed-3", "ranks-96"] and len(kept) < len(pieces)
    assert sw.point_id([*overrides[:-2], "train.eval_every=95", "seed=3"], 96) != pid  # left out, still told apart
    assert sw.point_id(["data.root=/" + "x" * 80], None) == sw.point_id(["data.root=/" + "x" * 80], None)
    assert len(sw.point_id(["data.root=/" + "x" * 80], None)) == 8  # a piece too long for any id: hash only


def test_set_fixes_keys_for_every_point(tmp_path: Path) -> None:
    path = write_sweep(tmp_path, grid={"train.lr": [0.1, 0.2]}, ranks=96)
    full = sw.load(path)
    small = sw.load(path, ["ranks=2", "parallel.devices_per_rank=48", "data.name=synthetic"])
    assert [p.ranks for p in small.points] == [2, 2]
    assert small.points[0].overrides == ("parallel.devices_per_rank=48", "data.name=synthetic", "train.lr=0.1")
    assert not {p.id for p in small.points} & {p.id for p in full.points}  # never the full run's files
    with pytest.raises(sw.SweepError, match="--set train.lr: the sweep varies train.lr"):
        sw.load(path, ["train.lr=0.3"])
    with pytest.raises(sw.SweepError, match="--set: expected KEY=VALUE"):
        sw.load(path, ["oops"])
    with pytest.raises(sw.SweepError, match="--set ranks: expected a positive integer"):
        sw.load(path, ["ranks=0"])
