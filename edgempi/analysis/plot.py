"""Curves of runs against steps, epochs, rounds, bytes or time; headless (Agg).

Grouped runs (seeds of one setting) are drawn as their mean with a ±1 standard deviation
band. Their evaluations rarely fall on the same x (wall time, or bytes of methods that sync
adaptively), so members are interpolated onto a common grid over the x range all share.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from edgempi.analysis.compare import differing_keys, group, group_keys, label
from edgempi.analysis.runs import AXES, Run, axis

# y → table it lives in.
METRICS = {"test_acc": "evals", "test_loss": "evals", "train_loss": "steps"}
XLABELS = {"step": "step", "epoch": "epoch", "round": "communication rounds", "bytes": "bytes per device (up + down)",
           "time": "wall time [s]", "simtime": "simulated time on the edge network [s]"}
FORMATS = (".png", ".pdf", ".svg")
GRID = 200


def _curve(run: Run, x: str, y: str, logx: bool) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) of a run, sorted by x: finite points only, and on a log axis positive x only."""
    table = run.tables[METRICS[y]]
    xs = axis(table, x)
    ys = np.asarray(table.get(y, np.full(len(xs), np.nan)), dtype=float)[:len(xs)]
    keep = np.isfinite(xs) & np.isfinite(ys) & ((xs > 0) if logx else True)
    order = np.argsort(xs[keep], kind="stable")
    return xs[keep][order], ys[keep][order]


def _band(curves: list[tuple[np.ndarray, np.ndarray]], logx: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean and std of the curves on a shared x; empty arrays if their x ranges do not overlap."""
    if all(len(c[0]) == len(curves[0][0]) and np.array_equal(c[0], curves[0][0]) for c in curves):
        grid = curves[0][0]
        ys = np.stack([c[1] for c in curves])
    else:
        lo = max(c[0].min() for c in curves)
        hi = min(c[0].max() for c in curves)
        if not lo < hi:
            return np.empty(0), np.empty(0), np.empty(0)
        grid = np.geomspace(lo, hi, GRID) if logx else np.linspace(lo, hi, GRID)
        ys = np.stack([np.interp(grid, cx, cy) for cx, cy in curves])
    return grid, ys.mean(axis=0), ys.std(axis=0)


def plot(runs: Sequence[Run], x: str, y: str, group_by: str | Sequence[str] | None = None, logx: bool | None = None,
         out: str | Path = "plot.png", title: str | None = None) -> Path:
    """Draw ``y`` against ``x`` for the runs into ``out`` (.png, .pdf or .svg); returns the path.

    ``x``: step, epoch, round, bytes, time, simtime; ``y``: test_acc, test_loss, train_loss.
    One line per run, labelled by the config keys that differ, or with ``group_by`` one mean
    line and band per group. ``logx`` defaults to True for bytes only.
    """
    if x not in AXES:
        raise ValueError(f"x: unknown axis {x!r} (choose from {', '.join(AXES)})")
    if y not in METRICS:
        raise ValueError(f"y: unknown metric {y!r} (choose from {', '.join(METRICS)})")
    out = Path(out)
    if out.suffix.lower() not in FORMATS:
        raise ValueError(f"out: unsupported format {out.suffix or out.name!r} (use {', '.join(FORMATS)})")
    runs = list(runs)
    if not runs:
        raise ValueError("plot: no runs to plot")
    logx = x == "bytes" if logx is None else logx

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = group_keys(group_by)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    try:
        drawn = _draw_groups(ax, runs, keys, x, y, logx) if keys else _draw_runs(ax, runs, x, y, logx)
        if not drawn:
            raise ValueError(f"plot: none of the {len(runs)} runs has {y} rows yet")
        if logx:
            ax.set_xscale("log")
        ax.set_xlabel(XLABELS[x])
        ax.set_ylabel(y.replace("_", " "))
        if title:
            ax.set_title(title)
        ax.grid(True, which="major", alpha=0.3)
        ax.legend(fontsize="small")
        fig.tight_layout()
        out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out, dpi=120)
    finally:
        plt.close(fig)
    return out


def _draw_groups(ax: Any, runs: Sequence[Run], keys: Sequence[str], x: str, y: str, logx: bool) -> int:
    """One mean line and band per group (its members' lines where they share no x range)."""
    drawn = 0
    for values, members in group(runs, keys):
        curves = [c for c in (_curve(r, x, y, logx) for r in members) if len(c[0])]
        if not curves:
            continue
        grid, mean, std = _band(curves, logx)
        name = f"{label(dict(zip(keys, values)))} (n={len(curves)})"
        if not len(grid):  # no common x range: show the members themselves
            color = None
            for i, (cx, cy) in enumerate(curves):
                (line,) = ax.plot(cx, cy, color=color, label=name if i == 0 else None, lw=1)
                color = line.get_color()
        else:
            (line,) = ax.plot(grid, mean, label=name)
            ax.fill_between(grid, mean - std, mean + std, color=line.get_color(), alpha=0.2, lw=0)
        drawn += 1
    return drawn


def _draw_runs(ax: Any, runs: Sequence[Run], x: str, y: str, logx: bool) -> int:
    """One line per run, labelled by the config keys in which the runs differ."""
    drawn, shown = 0, differing_keys(runs)
    for run in runs:
        cx, cy = _curve(run, x, y, logx)
        if len(cx):
            ax.plot(cx, cy, label=label({k: run.config.get(k) for k in shown}) if shown else run.name)
            drawn += 1
    return drawn
