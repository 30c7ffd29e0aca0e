"""A one-screen summary of one results file: what ran, how it ended, where it got to."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from edgempi import parallel
from edgempi.analysis.compare import fmt_value
from edgempi.analysis.runs import AXES, Run, RunReadError, axis, read_run
from edgempi.analysis.traffic import traffic
from edgempi.util.units import KINDS, human_bytes

# Last-row fields shown per table: (column or axis, label, format); "bytes": up, down, control, total.
LAST = {"steps": (("step", "step", "{:.0f}"), ("epoch", "epoch", "{:.2f}"), ("train_loss", "train_loss", "{:.4f}"),
                  ("round", "rounds", "{:.0f}"), ("bytes", "bytes", ""), ("time", "wall", "{:.1f} s"),
                  ("simtime", "sim", "{:.1f} s")),
        "evals": (("step", "step", "{:.0f}"), ("test_acc", "test_acc", "{:.2%}"), ("test_loss", "test_loss", "{:.4f}"))}


def _last(run: Run, table: str) -> str:
    data = run.tables[table]
    n = min((len(v) for v in data.values()), default=0)
    if not n:
        return f"{table}: no rows"
    parts = []
    for key, name, form in LAST.get(table, ()):
        if key == "bytes":
            sent = traffic(run, table)
            parts.append("bytes " + ", ".join(f"{k} {human_bytes(sent[k][-1])}" for k in KINDS))
            continue
        column = axis(data, key) if key in AXES else data.get(key, [np.nan])
        value = float(column[-1])
        if np.isfinite(value):
            parts.append(f"{name} {form.format(value)}")
    return f"{table}: {n} rows" + (f", last: {', '.join(parts)}" if parts else "")


def info(path: str | Path) -> str:
    """Config summary, status, size and last metrics of one file; ValueError if unreadable."""
    try:
        run = read_run(path)
    except RunReadError as exc:
        raise RunReadError(f"{path}: {exc}") from exc
    a = run.attrs
    c = run.config
    lines = [f"{run.path}: {run.status} ({human_bytes(run.size)})",
             f"  {c.get('algorithm.name', a.get('algorithm', '?'))}: {c.get('model.name', '?')} on "
             f"{c.get('data.name', '?')}, {a.get('devices', a.get('world_size', '?'))} devices, "
             f"world size {a.get('world_size', '?')}",
             f"  created {a.get('created', '?')}, finished {a.get('finished', '-')}"]
    if a.get("error"):
        lines.append(f"  error: {a['error']}")
    if a.get("evaluated_model"):
        lines.append(f"  evaluations score: {a['evaluated_model']}")
    lines += [f"  {line}" for line in parallel.describe(str(c.get("parallel.mode", "data")), a)]
    sections: dict[str, list[str]] = {}
    for key, value in c.items():
        section, _, rest = key.partition(".")
        if value is not None and rest:
            sections.setdefault(section, []).append(f"{rest}={fmt_value(value)}")
        elif value is not None:
            sections.setdefault("", []).append(f"{key}={fmt_value(value)}")
    lines += [f"  {name or 'run'}: {' '.join(items)}" for name, items in sections.items()]
    lines += [f"  {_last(run, t)}" for t in ("steps", "evals")]
    syncs = run.syncs
    lines.append(f"  syncs: {min((len(v) for v in syncs.values()), default=0)} rows")
    return "\n".join(lines) + "\n"
