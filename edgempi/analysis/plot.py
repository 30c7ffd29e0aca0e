"""Curves of runs against steps, epochs, rounds, bytes or time; headless (Agg).

Grouped runs (seeds of one setting) are drawn as their mean with a ±1 standard deviation
band. Their evaluations rarely fall on the same x (wall time, or bytes of methods that sync
adaptively), so members are interpolated onto a common grid over the x range all share.
Lines are named by method display names (``FDA (linear, Θ = 1)``) and the settings that tell
the runs apart, axes carry units, the title names the data set and split the runs share, and
the legend sits below the axes, never on the curves. A figure is one column of a two-column
paper wide (3.5 in, 300 dpi as PNG). A log x axis is symlog: linear from 0 to the decade below
the first positive x, logarithmic beyond, so the evaluation at step 0 (no bytes sent yet) stays
drawn at the left edge instead of vanishing at log(0).
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgempi.analysis.compare import data_title, differing_keys, group, group_keys, label, run_label
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
WIDTH, HEIGHT, DPI = 3.5, 2.6, 300  # inches: one column of a two-column paper
FONT = 7  # points; ticks, legend and footnote a little smaller
LEGEND_ROW = 0.11  # inches the figure grows by for each legend row beyond two
LEGEND_WIDTH, NOTE_WIDTH = 56, 80  # characters of a legend entry's and of the footnote's lines in that width


def _x(run: Run, table: str, x: str) -> np.ndarray:
    """The x value of every row of ``table``: an axis of runs.AXES, or bytes (edgempi.util.units)."""
    values = traffic(run, table)[BYTE_AXES[x]] if x in BYTE_AXES else axis(run.tables[table], x)
    return values + charged(run, x) if table == "evals" else values


def _curve(run: Run, x: str, y: str) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) of a run, sorted by x: finite points only."""
    table = run.tables[METRICS[y]]
    xs = _x(run, METRICS[y], x)
    ys = np.asarray(table.get(y, np.full(len(xs), np.nan)), dtype=float)[:len(xs)]
    keep = np.isfinite(xs) & np.isfinite(ys)
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
        grid = _grid(curves, lo, hi) if logx else np.linspace(lo, hi, GRID)
        ys = np.stack([np.interp(grid, cx, cy) for cx, cy in curves])
    return grid, ys.mean(axis=0), ys.std(axis=0)


def _grid(curves: list[tuple[np.ndarray, np.ndarray]], lo: float, hi: float) -> np.ndarray:
    """A grid for a log axis: geometric from the first positive x all curves have, and ``lo``
    itself (0 where the curves start at step 0)."""
    start = max((cx[cx > 0].min() if (cx > 0).any() else hi) for cx, _ in curves)
    tail = np.geomspace(max(lo, start), hi, GRID) if max(lo, start) < hi else np.array([hi])
    return np.unique(np.concatenate([[lo], tail]))


def plot(runs: Sequence[Run], x: str, y: str, group_by: str | Sequence[str] | None = None, logx: bool | None = None,
         out: str | Path = "plot.png", title: str | None = None, mixed_eval: bool = False,
         all_settings: bool = False) -> Path:
    """Draw ``y`` against ``x`` for the runs into ``out`` (.png, .pdf or .svg); returns the path.

    ``x``: step, epoch, round, bytes (total), bytes_up, bytes_down, ctrl_bytes, time, simtime;
    ``y``: test_acc, test_loss, train_loss. One line per run, labelled by the config keys
    that tell the runs apart (every key that differs at all with ``all_settings``), or with
    ``group_by`` one mean line and band per group. ``logx``: a (sym)log x axis (None: for the
    byte axes only, whose values span decades). ``title``
    defaults to the data set and split the runs share ("" for none). A footnote says which
    model the evaluations scored; runs scored on different models (``train.eval_model``) are
    refused unless ``mixed_eval``.
    """
    out = Path(out)
    if out.suffix.lower() not in FORMATS:
        raise ValueError(f"out: unsupported format {out.suffix or out.name!r} (use {', '.join(FORMATS)})")
    fig = figure(runs, x, y, group_by, logx, title, mixed_eval, all_settings)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out, dpi=DPI)
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

    fig, ax = plt.subplots(figsize=(WIDTH, HEIGHT), layout="constrained")
    try:
        keys = group_keys(group_by)
        drawn = (_draw_groups(ax, runs, keys, x, y, logx) if keys
                 else _draw_runs(ax, runs, x, y, all_settings))
        if not drawn:
            raise ValueError(f"plot: none of the {len(runs)} runs has {y} rows yet")
        _decorate(ax, x, y, logx, data_title(runs) if title is None else title)
        if METRICS[y] == "evals":
            scored = "; ".join(f"{kind}: {DESCRIBED[kind]}" for kind in sorted({eval_model(r) for r in runs}))
            ax.annotate(_wrapped(f"evaluations score {scored}", NOTE_WIDTH, " "), xy=(0.5, 0),
                        xycoords=ax.xaxis.label, xytext=(0, -2), textcoords="offset points", ha="center",
                        va="top", fontsize=FONT - 1.5, alpha=0.7)
        _legend(fig)
    except BaseException:
        plt.close(fig)
        raise
    return fig


def _draw_runs(ax: Any, runs: list[Run], x: str, y: str, all_settings: bool) -> int:
    """One line per run, named by what differs between the runs."""
    shown = differing_keys(runs, all_settings=all_settings)
    drawn = 0
    for run in runs:
        cx, cy = _curve(run, x, y)
        if len(cx):
            ax.plot(cx, cy, label=run_label(run, shown))
            drawn += 1
    return drawn


def _draw_groups(ax: Any, runs: list[Run], keys: tuple[str, ...], x: str, y: str, logx: bool) -> int:
    """A mean line and a ±1 std band per group; the members themselves where their x ranges
    do not overlap."""
    drawn = 0
    for values, members in group(runs, keys):
        curves = [c for c in (_curve(r, x, y) for r in members) if len(c[0])]
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


def _decorate(ax: Any, x: str, y: str, logx: bool, title: str) -> None:
    """Scales, units, grid and title, in the fonts of a paper column."""
    from matplotlib.ticker import EngFormatter, PercentFormatter

    if logx:
        positive = [v for line in ax.lines for v in np.asarray(line.get_xdata(), dtype=float) if v > 0]
        ax.set_xscale("symlog", linthresh=10.0 ** np.floor(np.log10(min(positive, default=1.0))), linscale=0.4)
    if x in BYTE_AXES or logx:
        ax.xaxis.set_major_formatter(EngFormatter(unit="B" if x in BYTE_AXES else ""))
    if y == "test_acc":
        ax.yaxis.set_major_formatter(PercentFormatter(xmax=1))
    ax.set_xlabel(XLABELS[x], fontsize=FONT)
    ax.set_ylabel(YLABELS[y], fontsize=FONT)
    ax.tick_params(labelsize=FONT - 0.5)
    if title:
        ax.set_title(title, fontsize=FONT + 0.5)
    ax.grid(True, which="major", alpha=0.3)


def _legend(fig: Any) -> None:
    """The legend below the axes (and the footnote), in two columns while the names are short,
    a long name broken after its commas; the figure grows by the rows beyond two, so the axes
    keep their size."""
    labels = fig.axes[0].get_legend_handles_labels()[1]
    columns = 2 if len(labels) > 1 and max(map(len, labels)) <= LEGEND_WIDTH // 2 else 1
    lines = sum(_wrapped(text, LEGEND_WIDTH).count("\n") + 1 for text in labels)
    fig.set_size_inches(WIDTH, HEIGHT + LEGEND_ROW * max(0, -(-lines // columns) - 2))
    legend = fig.legend(loc="outside lower center", ncols=columns, frameon=False, fontsize=FONT - 0.5)
    for text in legend.get_texts():
        text.set_text(_wrapped(text.get_text(), LEGEND_WIDTH))


def _wrapped(text: str, width: int, separator: str = ", ") -> str:
    """``text`` broken after its separators into lines of at most ``width`` characters (a
    longer piece keeps a line of its own)."""
    lines: list[str] = []
    for piece in text.split(separator):
        if lines and len(lines[-1]) + len(separator) + len(piece) <= width:
            lines[-1] += separator + piece
        else:
            lines.append(piece)
    return f"{separator.rstrip()}\n".join(lines)
