"""The comparison table: accuracy reached, and what it cost to first reach a target accuracy.

This is the Edgify "communication rounds to 80%" table generalised: for each run (or group
of runs, e.g. seeds of one setting) the epochs, rounds, bytes per device (up, down, control
and their total) and time — measured wall time and simulated edge-network time — at the
first evaluation at or above the target, and how many times fewer total bytes that took than
a baseline method.
"""
from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgempi.analysis.compare import differing_keys, fmt_value, group, group_keys, matches, parse_selector, short_names
from edgempi.analysis.protocol import DESCRIBED, charged, check_same, eval_model
from edgempi.analysis.runs import Run, axis
from edgempi.analysis.traffic import BYTE_AXES, traffic
from edgempi.util.units import human_bytes

# Costs at the first evaluation reaching the target: (name, csv column, markdown header).
# "bytes" is the total (up + down + control), the figure the baseline ratio compares.
COST = (("epoch", "epochs", "epochs"), ("round", "rounds", "rounds"), ("bytes_up", "bytes_up", "bytes up"),
        ("bytes_down", "bytes_down", "bytes down"), ("ctrl_bytes", "ctrl_bytes", "bytes control"),
        ("bytes", "bytes", "bytes total"), ("time", "wall_s", "wall s"), ("simtime", "sim_s", "sim s"))


@dataclass(frozen=True)
class Target:
    """The accuracy to reach, as a fraction, and whether reaching means passing it (``strict``)."""

    value: float
    strict: bool = False

    @property
    def label(self) -> str:
        return f"{'>' if self.strict else ''}{100 * self.value:g}%"


def target_fraction(target_acc: float) -> float:
    """Accuracy is stored as a fraction; a target above 1 is read as a percentage (80 → 0.8)."""
    target = float(target_acc)
    if target > 1:
        target /= 100
    if not 0 < target <= 1:
        raise ValueError(f"target accuracy: must be in (0, 1] or a percentage in (1, 100], got {target_acc!r}")
    return target


def to_target(run: Run, target: float, strict: bool = False) -> dict[str, float] | None:
    """Costs at the first evaluation with test_acc >= target (> target if ``strict``, the FDA
    paper's rule), with the sync an ``average`` run's score needs charged
    (:mod:`edgempi.analysis.protocol`); None if the run never got there."""
    acc = np.asarray(run.evals.get("test_acc", ()), dtype=float)
    hits = np.flatnonzero(acc > target if strict else acc >= target)
    if not hits.size:
        return None
    row = int(hits[0])
    sent = traffic(run, "evals")
    return {name: float((sent[BYTE_AXES[name]] if name in BYTE_AXES else axis(run.evals, name))[row]
                        + charged(run, name)[row]) for name, _, _ in COST}


def _acc(run: Run, how: str) -> float:
    acc = np.asarray(run.evals.get("test_acc", ()), dtype=float)
    acc = acc[np.isfinite(acc)]
    if not acc.size:
        return float("nan")
    return float(acc[-1] if how == "final" else acc.max())


def _mean(values: Iterable[float]) -> float:
    values = [v for v in values if np.isfinite(v)]
    return float(np.mean(values)) if values else float("nan")


@dataclass
class Row:
    """One line of the table; cost is the mean over the member runs that reached the target."""

    name: str
    runs: list[Run]
    params: dict[str, Any]
    final: float
    best: float
    reached: int
    cost: dict[str, float] | None
    reduction: float | None = None


def _row(name: str, runs: list[Run], params: dict[str, Any], target: Target) -> Row:
    reached = [c for c in (to_target(r, target.value, target.strict) for r in runs) if c is not None]
    cost = {k: _mean(c[k] for c in reached) for k, _, _ in COST} if reached else None
    return Row(name, runs, params, _mean(_acc(r, "final") for r in runs), _mean(_acc(r, "best") for r in runs),
               len(reached), cost)


def rows(runs: Sequence[Run], target: Target, group_by: str | Sequence[str] | None = None,
         all_settings: bool = False) -> tuple[list[Row], list[str]]:
    """Table rows, and the config keys shown because they tell the runs apart (besides the
    method; every key that differs with ``all_settings``, see :func:`compare.differing_keys`)."""
    keys = group_keys(group_by)
    varying = differing_keys(runs, all_settings=all_settings)
    if keys:
        groups = group(runs, keys)
        shown = [k for k in varying if all(len({fmt_value(r.value(k)) for r in g}) == 1 for _, g in groups)]
        for k in keys:
            if k not in shown:
                shown.append(k)
    else:
        groups = [((r.name,), [r]) for r in runs]
        shown = varying
    shown = [k for k in shown if k != "algorithm.name"]
    out = []
    for values, members in groups:
        name = ", ".join(fmt_value(v) for v in values) if keys else members[0].name
        out.append(_row(name, members, {k: members[0].value(k) for k in shown}, target))
    return out, shown


def _baseline(runs: Sequence[Run], baseline: str, target: Target) -> float | None:
    """Mean bytes to target of the runs the selector picks; None if none of them reached it."""
    key, value = parse_selector(baseline, "baseline")
    chosen = [r for r in runs if matches(r, key, value)]
    if not chosen:
        seen = sorted({fmt_value(r.value(key)) for r in runs})
        raise ValueError(f"baseline: no run has {key}={fmt_value(value)} (values seen: {', '.join(seen)})")
    costs = [c["bytes"] for c in (to_target(r, target.value, target.strict) for r in chosen) if c is not None]
    return float(np.mean(costs)) if costs else None


def _method(row: Row) -> str:
    methods = sorted({str(r.config.get("algorithm.name") or r.attrs.get("algorithm", "?")) for r in row.runs})
    return "/".join(methods)


def _md_cost(name: str, value: float) -> str:
    if name in BYTE_AXES:
        return human_bytes(value)
    if name == "round":
        return f"{value:.0f}" if value == round(value) else f"{value:.1f}"
    return f"{value:.2f}" if name == "epoch" else f"{value:.1f}"


def _pct(value: float) -> str:
    return "—" if not np.isfinite(value) else f"{100 * value:.2f}%"


def report(runs: Iterable[Run], target_acc: float, baseline: str | None = None, fmt: str = "md",
           group_by: str | Sequence[str] | None = None, strict: bool = False, mixed_eval: bool = False,
           all_settings: bool = False) -> str:
    """The comparison table as Markdown (``md``) or CSV (``csv``).

    ``target_acc`` is a fraction or a percentage, reached at the first evaluation at or above
    it (above it if ``strict``); ``baseline`` is ``KEY=VALUE`` selecting the runs whose mean
    total bytes to target the others are compared with (``× fewer bytes than baseline`` =
    baseline total / run total; CSV ``times_fewer_bytes_than_baseline``). Runs scored on
    different models (``train.eval_model``) are refused unless ``mixed_eval``. Setting columns:
    the keys that tell the runs apart, every key that differs with ``all_settings``.
    """
    if fmt not in ("md", "csv"):
        raise ValueError(f"format: unknown value {fmt!r} (choose from md, csv)")
    runs = list(runs)
    if not runs:
        raise ValueError("report: no runs to report")
    check_same(runs, mixed_eval)
    target = Target(target_fraction(target_acc), strict)
    table, shown = rows(runs, target, group_by, all_settings)
    base = _baseline(runs, baseline, target) if baseline else None
    for row in table:
        if base is not None and row.cost is not None and row.cost["bytes"] > 0:
            row.reduction = base / row.cost["bytes"]
    grouped = bool(group_keys(group_by))
    return (_csv if fmt == "csv" else _markdown)(table, shown, target, baseline, base, grouped)


def _scored(row: Row) -> str:
    return "/".join(sorted({eval_model(r) for r in row.runs}))


def _reached(row: Row, grouped: bool) -> str:
    if not row.reached:
        return "not reached"
    return f"{row.reached}/{len(row.runs)}" if grouped else "yes"


def _markdown(table: list[Row], shown: list[str], target: Target, baseline: str | None, base: float | None,
              grouped: bool) -> str:
    pct = target.label
    names = short_names(shown)
    header = ["group" if grouped else "run", "method", *(names[k] for k in shown), "scored"]
    header += ["runs"] if grouped else ["status"]
    header += ["final acc", "best acc", f"reached {pct}", *(f"{h} to {pct}" for _, _, h in COST)]
    if baseline:
        header.append("× fewer bytes than baseline")
    lines = []
    for row in table:
        cells = [row.name, _method(row), *(fmt_value(row.params[k]) for k in shown), _scored(row)]
        cells.append(str(len(row.runs)) if grouped else row.runs[0].status)
        cells += [_pct(row.final), _pct(row.best), _reached(row, grouped)]
        cells += [_md_cost(a, row.cost[a]) if row.cost else "—" for a, _, _ in COST]
        if baseline:
            cells.append(f"{row.reduction:.3g}×" if row.reduction is not None else "—")
        lines.append(cells)
    text = [f"Target test accuracy {pct}: costs at the first evaluation reaching it"
            + (" (mean over the runs of a group that reached it)" if grouped else "")
            + "; bytes per device, total = up + down + control."]
    scored = sorted({eval_model(r) for row in table for r in row.runs})
    text += [f"Scored {kind}: {DESCRIBED[kind]}." for kind in scored]
    if baseline:
        text.append(f"Baseline {baseline}: " + (f"{human_bytes(base)} total to {pct}." if base is not None
                                                 else f"never reached {pct}, so no byte ratio."))
    text += ["", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    text += ["| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |" for cells in lines]
    return "\n".join(text) + "\n"


def _csv(table: list[Row], shown: list[str], target: Target, baseline: str | None, base: float | None,
         grouped: bool) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    header = ["group" if grouped else "run", "method", *shown, "eval_model", "runs" if grouped else "status", "target",
              "final_acc", "best_acc", "reached", *(f"{c}_to_target" for _, c, _ in COST)]
    if baseline:
        header.append("times_fewer_bytes_than_baseline")
    writer.writerow(header)
    for row in table:
        cells: list[Any] = [row.name, _method(row), *(fmt_value(row.params[k]) for k in shown), _scored(row),
                            len(row.runs) if grouped else row.runs[0].status, target.value,
                            _num(row.final), _num(row.best), _reached(row, grouped)]
        cells += [_num(row.cost[a]) if row.cost else "" for a, _, _ in COST]
        if baseline:
            cells.append(_num(row.reduction) if row.reduction is not None else "")
        writer.writerow(cells)
    return buf.getvalue()


def _num(value: float) -> str:
    return "" if not np.isfinite(value) else f"{value:.10g}"
