"""Sweeps: a base config times a grid of overrides, run one point per task (Slurm job arrays).

A sweep YAML::

    name: edgify                      # results go to <out>/<name>/<point id>.h5
    base: ../configs/quickstart.yaml  # a config path (relative to this file, else to the cwd) or a mapping
    grid:                             # cartesian product, first key slowest
      algorithm.name: [fedavg, large_batch]
      train.lr: [0.1, 0.05]
      ranks: [4, 8]                   # world size per point may be a grid key ...
    zip:                              # varied together: equal-length lists
      algorithm.local_steps: [1, 10]
      train.batch_size: [32, 64]
    seeds: [0, 1, 2]                  # innermost: each point once per seed (override seed=S)
    ranks: 4                          # ... or one world size for every point

A point's id is made from its override values only (never from its position), so adding a
value to a grid keeps the ids — and therefore the results files — of the points already
run, and a re-submitted array skips what is done. ``edgempi sweep S --set KEY=VALUE`` adds a
one-value grid key to every point (``ranks=R`` sets the world size), e.g. to run a sweep
scaled down; being part of the overrides, it is part of the ids too.
"""
from __future__ import annotations

import argparse
import copy
import hashlib
import itertools
import os
import re
import shutil
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import yaml

from edgempi.analysis.runs import RunReadError, read_status
from edgempi.config import ConfigError
from edgempi.util import yamltext
from edgempi.util.progress import write_line

KEYS = ("name", "base", "grid", "zip", "seeds", "ranks")
STATUSES = ("missing", "running", "interrupted", "completed", "failed")
ID_TEXT = 60  # characters of the readable part of a point id


class SweepError(ValueError):
    """A bad sweep file or a task that must not run; the message is one line for the user."""


@dataclass(frozen=True)
class Point:
    """One configuration of the sweep: ``overrides`` are ``key=value`` texts for ``--set``."""

    index: int
    id: str
    overrides: tuple[str, ...]
    ranks: int | None = None


@dataclass
class Sweep:
    name: str
    path: Path
    base: str | dict[str, Any]  # a config path, or the config itself
    points: list[Point] = field(default_factory=list)

    def results_dir(self, out: str | Path = "results") -> Path:
        return Path(out) / self.name

    def results_file(self, point: Point, out: str | Path = "results") -> Path:
        return self.results_dir(out) / f"{point.id}.h5"


def yaml_value(value: Any) -> str:
    """A value as YAML text that reads back as the same value (``0.1``, ``fedavg``, ``[1, 2]``, ``null``)."""
    text = yaml.safe_dump(value, default_flow_style=True, width=10**6).strip()
    return text.removesuffix("...").strip()


def point_id(overrides: Sequence[str], ranks: int | None, fixed: Sequence[str] = ()) -> str:
    """Readable part from the values (``fedavg_seed-1_ranks-4_lr-0.1``) plus a hash of all of them.

    The readable part reads in one order whatever the order of the sweep file's keys: the method
    (its name alone), seed and ranks first, then the other keys sorted; a null value (a key the
    point's method does not take) is left out. It holds whole ``key-value`` pieces only, at most
    ID_TEXT characters: when not all fit, the method, seed and ranks go in first, then the others
    in order as long as they fit, the ``fixed`` keys (``--set``, the same in every point) last.
    A piece is left out, never cut, so ``eval_every-94`` can never read as ``eval_every-9``; the
    hash of every override, nulls included, still tells the points apart.
    """
    first = {"algorithm.name": 0, "seed": 1, "ranks": 2}
    pairs = [o.split("=", 1) for o in overrides] + ([["ranks", str(ranks)]] if ranks is not None else [])
    items = sorted((kv for kv in pairs if kv[1] != "null"), key=lambda kv: (first.get(kv[0], len(first)), kv[0]))
    short = [k.rsplit(".", 1)[-1] for k, _ in items]
    named = [s for (k, _), s in zip(items, short) if k != "algorithm.name"]  # the method goes by its value alone
    pieces = [re.sub(r"[^A-Za-z0-9._=-]+", "-", value if key == "algorithm.name" else
                     f"{s if named.count(s) == 1 else key}-{value}") for (key, value), s in zip(items, short)]
    rank = [0 if key in first else 2 if key in fixed else 1 for key, _ in items]
    chosen: list[int] = []
    for i in sorted(range(len(items)), key=lambda i: rank[i]):
        if len("_".join(pieces[j] for j in sorted([*chosen, i])).strip("-._")) <= ID_TEXT:
            chosen.append(i)
    readable = "_".join(pieces[i] for i in sorted(chosen)).strip("-._")
    canonical = "\n".join(sorted(overrides)) + (f"\nranks={ranks}" if ranks is not None else "")
    digest = hashlib.sha1(canonical.encode()).hexdigest()[:8]
    return f"{readable}-{digest}" if readable else digest


def _list(value: Any, key: str) -> list[Any]:
    if not isinstance(value, list) or not value:
        raise SweepError(f"{key}: expected a non-empty list, got {value!r}")
    return value


def _ranks(value: Any, key: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise SweepError(f"{key}: expected a positive integer (the world size), got {value!r}")
    return value


def _mapping(value: Any, key: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(k, str) and k for k in value):
        raise SweepError(f"{key}: expected a mapping of dotted config keys to lists")
    return value


def load(path: str | Path, extra: Sequence[str] = ()) -> Sweep:
    """Read and expand a sweep file; SweepError names the offending key.

    ``extra`` (``edgempi sweep --set KEY=VALUE``) adds one-value grid keys to every point, so
    they are part of each point's overrides and id: a scaled-down run of a sweep never
    shares files with the full one. ``ranks=R`` sets every point's world size.
    """
    path = Path(path)
    raw = _read(path)
    name = raw.get("name")
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
        raise SweepError(f"name: expected a file-name-safe string (letters, digits, . _ -), got {name!r}")
    grid, zipped, seeds, fixed_ranks = _axes(raw)
    grid, fixed_ranks = _with_extra(extra, grid, zipped, seeds, fixed_ranks)
    fixed = [text.partition("=")[0].strip() for text in extra]
    return Sweep(name=name, path=path, base=_base(raw.get("base"), path),
                 points=_points(grid, zipped, seeds, fixed_ranks, fixed))


def _read(path: Path) -> dict[str, Any]:
    try:
        raw = yamltext.read(path, "sweep file")
    except ConfigError as exc:
        raise SweepError(str(exc)) from exc
    if not isinstance(raw, dict):
        raise SweepError(f"{path}: expected a mapping with keys {', '.join(KEYS)}")
    unknown = sorted(set(raw) - set(KEYS))
    if unknown:
        raise SweepError(f"{unknown[0]}: unknown sweep key (known: {', '.join(KEYS)})")
    return raw


def _base(base: Any, path: Path) -> str | dict[str, Any]:
    """The base config: a path (relative to the sweep file, else to the cwd) or a mapping."""
    if isinstance(base, str):
        found = next((c for c in (path.parent / base, Path(base)) if c.is_file()), None)
        if found is None:
            raise SweepError(f"base: no config file {base!r} next to {path} or in the working directory")
        return str(found)
    if isinstance(base, dict):
        return copy.deepcopy(base)
    raise SweepError(f"base: expected a config path or an inline config mapping, got {base!r}")


def _axes(raw: dict[str, Any]) -> tuple[dict[str, list], dict[str, list], list, int | None]:
    """grid, zip, seeds and the fixed world size, checked against each other."""
    grid = {k: _list(v, f"grid.{k}") for k, v in _mapping(raw.get("grid"), "grid").items()}
    zipped = {k: _list(v, f"zip.{k}") for k, v in _mapping(raw.get("zip"), "zip").items()}
    lengths = {k: len(v) for k, v in zipped.items()}
    if len(set(lengths.values())) > 1:
        raise SweepError("zip: lists differ in length (" + ", ".join(f"{k} has {n}" for k, n in lengths.items()) + ")")
    both = sorted(set(grid) & set(zipped))
    if both:
        raise SweepError(f"zip.{both[0]}: also in grid; a key is varied in one place only")
    seeds = _list(raw["seeds"], "seeds") if raw.get("seeds") is not None else [None]
    if seeds != [None] and "seed" in set(grid) | set(zipped):
        raise SweepError("seeds: seed is also varied in grid/zip; use one of them")
    if "ranks" in grid and raw.get("ranks") is not None:
        raise SweepError("ranks: given both as a grid key and at the top level; use one of them")
    if "ranks" in zipped:
        raise SweepError("zip.ranks: vary ranks in grid, or set it once at the top level")
    for i, r in enumerate(grid.get("ranks", [])):
        _ranks(r, f"grid.ranks[{i}]")
    return grid, zipped, seeds, _ranks(raw.get("ranks"), "ranks")


def _with_extra(extra: Sequence[str], grid: dict[str, list], zipped: dict[str, list], seeds: list,
                fixed_ranks: int | None) -> tuple[dict[str, list], int | None]:
    """``--set KEY=VALUE`` as one-value grid keys (first); ``ranks=R`` replaces the fixed world size."""
    added: dict[str, list] = {}
    for text in extra:
        key, sep, value_text = text.partition("=")
        key = key.strip()
        if not sep or not key:
            raise SweepError(f"--set: expected KEY=VALUE, got {text!r}")
        try:
            value = yamltext.value(value_text, key)
        except ConfigError as exc:
            raise SweepError(f"--set {exc}") from None
        varied = key in grid or key in zipped or (key == "seed" and seeds != [None])
        if varied:
            raise SweepError(f"--set {key}: the sweep varies {key}; --set fixes keys it does not vary")
        if key == "ranks":
            fixed_ranks = _ranks(value, "--set ranks")
        else:
            added[key] = [value]
    return {**added, **grid}, fixed_ranks


def _points(grid: dict[str, list], zipped: dict[str, list], seeds: list, fixed_ranks: int | None,
            fixed: Sequence[str] = ()) -> list[Point]:
    """The cartesian product of grid, times the zip rows, times the seeds (innermost)."""
    zip_rows = [dict(zip(zipped, row)) for row in zip(*zipped.values())] or [{}]
    points: list[Point] = []
    seen: dict[str, int] = {}
    for combo in itertools.product(*grid.values()):
        values = dict(zip(grid, combo))
        ranks = values.pop("ranks", fixed_ranks)
        for zip_row in zip_rows:
            for seed in seeds:
                chosen = {**values, **zip_row, **({"seed": seed} if seed is not None else {})}
                overrides = tuple(f"{k}={yaml_value(v)}" for k, v in chosen.items())
                pid = point_id(overrides, ranks, fixed)
                if pid in seen:
                    raise SweepError(f"grid: points {seen[pid]} and {len(points)} are the same "
                                     f"({', '.join(overrides)}); remove the repeated value")
                seen[pid] = len(points)
                points.append(Point(len(points), pid, overrides, ranks))
    return points


def expand(sweep_path: str | Path) -> list[Point]:
    """The sweep's points in task order (index = ``SLURM_ARRAY_TASK_ID``)."""
    return load(sweep_path).points


def point_status(results_dir: str | Path, point: Point) -> str:
    """missing | running | completed | failed, from the root ``status`` of the point's file.

    A file that cannot be read (truncated, foreign, or too damaged to answer within the
    reader's deadline) counts as failed: it needs ``--retry``.
    """
    path = Path(results_dir) / f"{point.id}.h5"
    if not path.exists():
        return "missing"
    try:
        status = read_status(path)
    except RunReadError:
        return "failed"
    return status if status in STATUSES else "failed"


def expected_ranks(point: Point, environ: Mapping[str, str] = os.environ) -> int | None:
    """The world size a task must find: the point's ranks, else what Slurm was asked for (-n)."""
    if point.ranks is not None:
        return point.ranks
    ntasks = environ.get("SLURM_NTASKS", "")
    return int(ntasks) if ntasks.isdigit() else None


@dataclass(frozen=True)
class Decision:
    action: str  # run | resume | skip
    point: Point
    path: Path
    status: str
    message: str


def decide(sweep: Sweep, index: int, world_size: int, retry: bool = False, out: str | Path = "results",
           environ: Mapping[str, str] = os.environ) -> Decision:
    """What ``--task index`` should do; SweepError (one line) when it must not run.

    The world size is checked first: a launcher that started N single-rank copies
    (``srun --mpi=none``) must fail loudly rather than skip or train N times on one device.
    """
    n = len(sweep.points)
    if not 0 <= index < n:
        raise SweepError(f"--task {index}: the sweep {sweep.name} has {n} points (0-{n - 1})")
    point = sweep.points[index]
    expected = expected_ranks(point, environ)
    if expected is not None and world_size != expected:
        hint = (" (MPI did not start: check srun --mpi=pmi2 / mpiexec, not N single-rank copies)"
                if world_size == 1 else "")
        raise SweepError(f"--task {index}: point {point.id} needs {expected} ranks but the job has "
                         f"{world_size}{hint}")
    path = sweep.results_file(point, out)
    status = point_status(path.parent, point)
    if status == "completed":
        return Decision("skip", point, path, status, f"point {index} ({point.id}) already completed: {path}")
    if status in ("running", "interrupted") and (path.with_suffix(".ckpt") / "meta.json").exists() and not retry:
        return Decision("resume", point, path, status, f"point {index} ({point.id}): resuming from its checkpoint")
    if status in ("running", "interrupted", "failed") and not retry:
        why = "may still be running in another job, or was killed" if status == "running" else "failed"
        raise SweepError(f"--task {index}: {path} is a {status} leftover ({why}); pass --retry to run it again")
    return Decision("run", point, path, status, f"point {index} ({point.id}): {' '.join(point.overrides)}")


RunFn = Callable[..., Any]  # (base config, overrides, out_file, resume=False)


class CommLike(Protocol):
    rank: int
    size: int

    def allgather_object(self, obj: Any) -> list[Any]: ...


def run_task(sweep: Sweep, index: int, run_config: RunFn, comm: CommLike, retry: bool = False,
             out: str | Path = "results", log: Callable[[str], None] | None = None) -> Decision:
    """Decide on rank 0, share the verdict with every rank, and run the point if it should run.

    One rank decides because the file can change between ranks' reads (another job finishing),
    and ranks that disagree on whether to train would leave some waiting in a collective.
    ``run_config(config_path_or_mapping, overrides, out_file)`` trains; a retried leftover is
    removed by rank 0 first. ``log`` (rank 0) hears which point starts, for the task's log.
    """
    verdict = _verdict(sweep, index, comm.size, retry, out) if comm.rank == 0 else None
    verdict = comm.allgather_object(verdict)[0]
    if isinstance(verdict, SweepError):
        raise SweepError(str(verdict))
    if log is not None and comm.rank == 0 and verdict.action != "skip":
        log(f"edgempi: {verdict.message}")
    if verdict.action == "run":
        if comm.rank == 0 and verdict.status != "missing":
            verdict.path.unlink(missing_ok=True)
            shutil.rmtree(verdict.path.with_suffix(".ckpt"), ignore_errors=True)
        run_config(copy.deepcopy(sweep.base), list(verdict.point.overrides), verdict.path)
    elif verdict.action == "resume":
        run_config(copy.deepcopy(sweep.base), list(verdict.point.overrides), verdict.path, resume=True)
    return verdict


def _verdict(sweep: Sweep, index: int, world_size: int, retry: bool, out: str | Path) -> Decision | SweepError:
    try:
        return decide(sweep, index, world_size, retry, out)
    except SweepError as exc:
        return exc


def array_spec(points: Sequence[Point], ranks: int | None = None) -> str:
    """The ``sbatch --array`` value for all points, or those that need ``ranks`` ranks (``0-3,8``)."""
    idx = [p.index for p in points if ranks is None or p.ranks == ranks]
    if not idx:
        raise SweepError(f"--ranks {ranks}: no point of the sweep needs {ranks} ranks")
    spans: list[str] = []
    start = prev = idx[0]
    for i in [*idx[1:], None]:
        if i is not None and i == prev + 1:
            prev = i
            continue
        spans.append(str(start) if start == prev else f"{start}-{prev}")
        if i is not None:
            start = prev = i
    return ",".join(spans)


# -- command line (wired into ``edgempi sweep`` by cli.py) ---------------------------------
def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("sweep", help="sweep YAML (base + grid/zip/seeds + name [+ ranks])")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--count", action="store_true", help="print the number of points")
    what.add_argument("--array", action="store_true",
                      help="print the sbatch --array value (with --ranks: only points needing that many ranks)")
    what.add_argument("--list", action="store_true", help="list points: index, status, ranks, id, overrides")
    what.add_argument("--results-dir", action="store_true", help="print the folder of this sweep's results files")
    what.add_argument("--task", type=int, metavar="N", help="run point N (SLURM_ARRAY_TASK_ID) under MPI")
    p.add_argument("--ranks", type=int, metavar="R", help="with --array: only points of world size R")
    p.add_argument("--retry", action="store_true", help="with --task: rerun a failed or stale running point")
    p.add_argument("--out", default="results", metavar="DIR",
                   help="results root; files go to DIR/<sweep name>/<point id>.h5 (default: results)")
    p.add_argument("--set", dest="extra", action="append", default=[], metavar="KEY=VALUE",
                   help="fix a config key for every point (part of the point ids); ranks=R sets the world size "
                        "(repeatable; give the same to every command of one sweep)")
    p.add_argument("--quiet", action="store_true", help="with --task: no progress output")


def command(args: argparse.Namespace, run_config: RunFn | None, start_comm: Callable[[], CommLike] | None) -> int:
    """``edgempi sweep``; raises SweepError for bad input (print it, exit 2). MPI starts only for --task."""
    sweep = load(args.sweep, getattr(args, "extra", ()))
    if args.count:
        print(len(sweep.points))
    elif args.array:
        print(array_spec(sweep.points, args.ranks))
    elif args.results_dir:
        print(sweep.results_dir(args.out))
    elif args.list:
        results = sweep.results_dir(args.out)
        for p in sweep.points:
            print(f"{p.index}\t{point_status(results, p)}\t{p.ranks or '-'}\t{p.id}\t{' '.join(p.overrides)}")
    else:
        assert run_config is not None and start_comm is not None, "--task runs a point: the CLI passes both"
        comm = start_comm()
        log = None if getattr(args, "quiet", False) else write_line
        decision = run_task(sweep, args.task, run_config, comm, args.retry, args.out, log=log)
        if comm.rank == 0:
            write_line(decision.message if decision.action == "skip" else str(decision.path), sys.stdout)
    return 0
