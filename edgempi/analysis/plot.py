"""Curves of runs against steps, epochs, rounds, bytes or time; headless (Agg).

Grouped runs (seeds of one setting) are drawn as their mean with a ±1 standard deviation
band. Their evaluations rarely fall on the same x (wall time, or bytes of methods that sync
adaptively), so members are interpolated onto a common grid over the x range all share.
Lines are named by method display names (``FDA (linear, Θ = 1)``), axes carry units, and the
legend sits beside the axes, never on the curves.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from edgempi.analysis.compare import differing_keys, group, group_keys, label, run_label
from edgempi.analysis.protocol import DESCRIBED, charged, check_same, eval_model
from edgempi.analysis.runs import AXES, Run, axis
from edgempi.analysis.traffic import BYTE_AXES, traffic

# y → table it lives in, and its axis label.
METRICS = {"test_acc": "evals", "test_loss": "evals", "train_loss": "steps"}
YLABELS = {"test_acc": "test accuracy", "test_loss": "test loss (cross-entropy)",
           "train_loss": "training loss (cross-entropy)"}
X_AXES = (*(a for a in AXES if a not in BYTE_AXES), *BYTE_AXES)
XLABELS = {"step": "steps", "epoch": "epochs", "round": "communication rounds",
           "bytes": "bytes per device, total (up + down + control)", "bytes_up": "bytes per device, up",
           "bytes_down": "bytes per device, down", "ctrl_bytes": "bytes per device, control",
           "time": "wall-clock time [s]", "simtime": "simulated time on the edge network [s]"}
FORMATS = (".png", ".pdf", ".svg")
GRID = 200


def _x(run: Run, table: str, x: str) -> np.ndarray:
    """The x value of every row of ``table``: an axis of runs.AXES, or bytes (edgempi.units)."""
    values = traffic(run, table)[BYTE_AXES[x]] if x in BYTE_AXES else axis(run.tables[table], x)
    return values + charged(run, x) if table == "evals" else values


def _curve(run: Run, x: str, y: str, logx: bool) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) of a run, sorted by x: finite points only, and on a log axis positive x only."""
    table = run.tables[METRICS[y]]
    xs = _x(run, METRICS[y], x)
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
         out: str | Path = "plot.png", title: str | None = None, mixed_eval: bool = False,
         all_settings: bool = False) -> Path:
    """Draw ``y`` against ``x`` for the runs into ``out`` (.png, .pdf or .svg); returns the path.

    ``x``: step, epoch, round, bytes (total), bytes_up, bytes_down, ctrl_bytes, time, simtime;
    ``y``: test_acc, test_loss, train_loss. One line per run, labelled by the config keys
    that tell the runs apart (every key that differs at all with ``all_settings``), or with
    ``group_by`` one mean line and band per group. ``logx`` defaults to
    True for bytes only. A footnote says which model the evaluations scored; runs scored on
    different models (``train.eval_model``) are refused unless ``mixed_eval``.
    """
    out = Path(out)
    if out.suffix.lower() not in FORMATS:
        raise ValueError(f"out: unsupported format {out.suffix or out.name!r} (use {', '.join(FORMATS)})")
    fig = figure(runs, x, y, group_by, logx, title, mixed_eval, all_settings)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out, dpi=120, bbox_inches="tight")
    finally:
        import matplotlib.pyplot as plt

        plt.close(fig)
    return out


def figure(runs: Sequence[Run], x: str, y: str, group_by: str | Sequence[str] | None = None,
           logx: bool | None = None, title: str | None = None, mixed_eval: bool = False,
           all_settings: bool = False) -> Any:
    """The matplotlib Figure that :func:`plot` saves (close it with ``plt.close``)."""
    if x not in X_AXES:
        raise ValueError(f"x: unknown axis {x!r} (choose from {', '.join(X_AXES)})")
    if y not in METRICS:
        raise ValueError(f"y: unknown metric {y!r} (choose from {', '.join(METRICS)})")
    runs = list(runs)
    if not runs:
        raise ValueError("plot: no runs to plot")
    check_same(runs, mixed_eval)
    logx = x in BYTE_AXES if logx is None else logx

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    try:
        keys = group_keys(group_by)
        drawn = (_draw_groups(ax, runs, keys, x, y, logx) if keys
                 else _draw_runs(ax, runs, x, y, logx, all_settings))
        if not drawn:
            raise ValueError(f"plot: none of the {len(runs)} runs has {y} rows yet")
        _decorate(fig, ax, x, y, logx, title)
        scored = "; ".join(f"{kind}: {DESCRIBED[kind]}" for kind in sorted({eval_model(r) for r in runs}))
        ax.text(0, -0.16, f"evaluations score {scored}", transform=ax.transAxes, fontsize="x-small", alpha=0.7,
                va="top")
    except BaseException:
        plt.close(fig)
        raise
    return fig


def _draw_runs(ax: Any, runs: list[Run], x: str, y: str, logx: bool, all_settings: bool) -> int:
    """One line per run, named by what differs between the runs."""
    shown = differing_keys(runs, all_settings=all_settings)
    drawn = 0
    for run in runs:
        cx, cy = _curve(run, x, y, logx)
        if len(cx):
            ax.plot(cx, cy, label=run_label(run, shown))
            drawn += 1
    return drawn


def _draw_groups(ax: Any, runs: list[Run], keys: tuple[str, ...], x: str, y: str, logx: bool) -> int:
    """A mean line and a ±1 std band per group; the members themselves where their x ranges
    do not overlap."""
    drawn = 0
    for values, members in group(runs, keys):
        curves = [c for c in (_curve(r, x, y, logx) for r in members) if len(c[0])]
        if not curves:
            continue
        grid, mean, std = _band(curves, logx)
        name = f"{label(dict(zip(keys, values)))}, n = {len(curves)}"
        if not len(grid):
            color = None
            for i, (cx, cy) in enumerate(curves):
                (line,) = ax.plot(cx, cy, color=color, label=name if i == 0 else None, lw=1)
                color = line.get_color()
        else:
            (line,) = ax.plot(grid, mean, label=name)
            ax.fill_between(grid, mean - std, mean + std, color=line.get_color(), alpha=0.2, lw=0)
        drawn += 1
    return drawn


def _decorate(fig: Any, ax: Any, x: str, y: str, logx: bool, title: str | None) -> None:
    """Scales, units, grid, title, and the legend to the right of the axes (``savefig``'s tight
    bounding box takes it in)."""
    from matplotlib.ticker import EngFormatter, PercentFormatter

    if logx:
        ax.set_xscale("log")
    if x in BYTE_AXES:
        ax.xaxis.set_major_formatter(EngFormatter(unit="B"))
    if y == "test_acc":
        ax.yaxis.set_major_formatter(PercentFormatter(xmax=1))
    ax.set_xlabel(XLABELS[x])
    ax.set_ylabel(YLABELS[y])
    if title:
        ax.set_title(title)
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0)
