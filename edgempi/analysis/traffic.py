"""Bytes per device at every row of a run's table, in the one vocabulary of ``edgempi.util.units``.

/steps and /evals hold all three counters. Files written before /evals had ``ctrl_bytes`` are
read too: their control bytes at an evaluation come from /steps at the same step (interpolated
between its rows where none falls on that step, exact when ``eval_every`` is a multiple of
``log_every``).
"""
from __future__ import annotations

import numpy as np

from edgempi.analysis.runs import Run
from edgempi.util.units import BYTES

# Plot axes and report columns of bytes: name → kind of edgempi.util.units.KINDS.
BYTE_AXES = {"bytes": "total", "bytes_up": "up", "bytes_down": "down", "ctrl_bytes": "control"}


def _rows(table: dict[str, np.ndarray]) -> int:
    return min((len(v) for v in table.values()), default=0)


def _column(table: dict[str, np.ndarray], name: str, n: int) -> np.ndarray:
    values = np.asarray(table.get(name, np.zeros(n)), dtype=float)[:n]
    return np.where(np.isfinite(values), values, 0.0)


def _control_from_steps(run: Run, at_steps: np.ndarray) -> np.ndarray:
    steps = run.steps
    n = _rows(steps)
    if not n or "ctrl_bytes" not in steps:
        return np.zeros(len(at_steps))
    xs, ys = _column(steps, "step", n), _column(steps, "ctrl_bytes", n)
    if xs[0] > 0:  # nothing was sent before the first step
        xs, ys = np.concatenate([[0.0], xs]), np.concatenate([[0.0], ys])
    return np.interp(at_steps, xs, ys)


def traffic(run: Run, table: str = "evals") -> dict[str, np.ndarray]:
    """``{"up", "down", "control", "total"}`` → per-device bytes at each row of ``table``."""
    data = run.tables[table]
    n = _rows(data)
    out = {word: _column(data, column, n) for word, column in BYTES if column in data}
    if "control" not in out:
        out["control"] = _control_from_steps(run, _column(data, "step", n))
    for word, _ in BYTES:
        out.setdefault(word, np.zeros(n))
    out["total"] = out["up"] + out["down"] + out["control"]
    return out
