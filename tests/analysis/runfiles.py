"""Hand-made results files in the edgempi/1 layout, with curves the tests choose.

Written the way the recorder writes them (libver='latest', one resizable 1-D dataset per
column, root attributes), so the analysis is tested against the schema, not the trainer.
"""
from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import yaml

STEP_COLUMNS = ("step", "epoch", "train_loss", "lr", "rounds", "bytes_up", "bytes_down", "ctrl_bytes",
                "compute_s", "comm_s", "wall_s", "sim_s")
EVAL_COLUMNS = ("step", "epoch", "rounds", "bytes_up", "bytes_down", "ctrl_bytes", "wall_s", "sim_s", "test_loss",
                "test_acc")
OLD_EVAL_COLUMNS = tuple(c for c in EVAL_COLUMNS if c != "ctrl_bytes")  # files written before /evals had it


def config(algorithm: str = "fedavg", lr: float = 0.1, seed: int = 0, **sections: Mapping[str, Any]) -> dict:
    cfg: dict[str, Any] = {"seed": seed, "data": {"name": "fashion-mnist"}, "model": {"name": "lenet5"},
                           "train": {"epochs": 4, "batch_size": 32, "lr": lr, "milestones": [2.0, 3.0]},
                           "algorithm": {"name": algorithm, "local_steps": 10},
                           "output": {"dir": "results", "name": None}}
    for name, values in sections.items():
        cfg.setdefault(name, {}).update(values)
    return cfg


def stored(cfg: Mapping[str, Any]) -> dict:
    """``cfg`` as a run stores it: validated, every key of its sections, method and compressor
    written out (defaults included), another method's keys left out."""
    from edgempi.config import from_dict

    return from_dict(dict(cfg)).to_dict()


def eval_curve(acc: Sequence[float], steps_per_eval: int = 100, rounds_per_eval: float = 10,
               bytes_per_round: float = 1000, secs_per_eval: float = 2.0, sim_per_eval: float = 5.0,
               evals_per_epoch: int = 1) -> dict[str, np.ndarray]:
    """An evals table: evaluation i is at step (i+1)·steps_per_eval with accuracy acc[i]."""
    acc = np.asarray(acc, dtype=float)
    i = np.arange(1, len(acc) + 1, dtype=float)
    rounds = i * rounds_per_eval
    return {"step": i * steps_per_eval, "epoch": i / evals_per_epoch, "rounds": rounds,
            "bytes_up": rounds * bytes_per_round / 2, "bytes_down": rounds * bytes_per_round / 2,
            "wall_s": i * secs_per_eval, "sim_s": i * sim_per_eval, "test_loss": 2.5 * (1 - acc), "test_acc": acc}


def step_curve(n: int = 50) -> dict[str, np.ndarray]:
    i = np.arange(n, dtype=float)
    return {"step": i, "epoch": i / 10, "train_loss": 2.3 / (1 + i / 10), "lr": np.full(n, 0.1), "rounds": i,
            "bytes_up": i * 500, "bytes_down": i * 500, "ctrl_bytes": np.zeros(n), "compute_s": i * 0.01,
            "comm_s": i * 0.001, "wall_s": i * 0.02, "sim_s": i * 0.05}


def create(path: Path, cfg: Mapping[str, Any], status: str = "completed", world_size: int = 4,
           syncs: Sequence[str] = ("step", "violators"), eval_columns: Sequence[str] = EVAL_COLUMNS,
           **attrs: Any) -> h5py.File:
    """An open file with the root attributes and empty tables; the caller appends and closes."""
    f = h5py.File(path, "w", libver="latest")
    f.attrs.update({"schema": "edgempi/1", "config": yaml.safe_dump(dict(cfg)), "status": status,
                    "algorithm": cfg["algorithm"]["name"], "world_size": world_size, "devices": world_size,
                    "created": "2026-11-21T00:00:00+00:00", "versions": json.dumps({"python": "3.11"}), **attrs})
    for table, columns in (("steps", STEP_COLUMNS), ("evals", eval_columns), ("syncs", syncs)):
        group = f.create_group(table)
        for col in columns:
            group.create_dataset(col, shape=(0,), maxshape=(None,), dtype="f8", chunks=(64,))
    f.create_dataset("partition/counts", data=np.full((world_size, 10), 10))
    return f


def append(f: h5py.File, table: str, rows: Mapping[str, np.ndarray]) -> None:
    """Append equal-length columns to a table (missing columns NaN) and flush."""
    group = f[table]
    n = len(next(iter(rows.values())))
    for col, ds in group.items():
        old = ds.shape[0]
        ds.resize((old + n,))
        ds[old:] = rows.get(col, np.full(n, np.nan))
    f.flush()


def write_run(path: Path, cfg: Mapping[str, Any] | None = None, evals: Mapping[str, np.ndarray] | None = None,
              steps: Mapping[str, np.ndarray] | None = None, status: str = "completed", **attrs: Any) -> Path:
    """A closed results file with the given tables."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with create(path, cfg or config(), status=status, **attrs) as f:
        append(f, "steps", steps if steps is not None else step_curve())
        if evals is not None and len(next(iter(evals.values()))):
            append(f, "evals", evals)
    return path


def legend(fig: Any) -> list[str]:
    """The legend entries of a figure of edgempi.analysis.plot.figure (a figure legend, below the axes)."""
    return [t.get_text() for t in fig.legends[0].get_texts()]
