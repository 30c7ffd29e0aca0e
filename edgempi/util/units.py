"""One vocabulary for what a run reports: bytes (up, down, control, total), sizes and durations.

Progress lines, ``edgempi info``, ``report`` and ``plot`` all name traffic the same way:
*up* and *down* are the model bytes a device sends to and receives from the server
(``bytes_up``, ``bytes_down``), *control* the small control traffic of dynamic averaging and
FDA (``ctrl_bytes``), and *total* their sum. All are per-device means.
"""
from __future__ import annotations

import math
from collections.abc import Mapping

# (word, column in the results file); total is the sum of the three.
BYTES = (("up", "bytes_up"), ("down", "bytes_down"), ("control", "ctrl_bytes"))
KINDS = ("up", "down", "control", "total")


def human_bytes(n: float) -> str:
    """``1234567`` → ``1.23 MB`` (decimal units, as network rates are quoted)."""
    units = ("B", "kB", "MB", "GB", "TB")
    i = 0
    while abs(n) >= 1000 and i < len(units) - 1:
        n /= 1000
        i += 1
    return f"{n:.0f} B" if i == 0 else f"{n:.3g} {units[i]}"


def byte_counts(row: Mapping[str, float]) -> dict[str, float]:
    """up, down, control and total of a row with ``bytes_up``/``bytes_down``/``ctrl_bytes`` (absent: 0)."""
    counts = {word: float(row.get(column, 0.0)) for word, column in BYTES}
    counts = {k: (v if math.isfinite(v) else 0.0) for k, v in counts.items()}
    return {**counts, "total": sum(counts.values())}


def describe_bytes(row: Mapping[str, float]) -> str:
    """``bytes up 1.2 MB, down 1.2 MB, control 4 kB, total 2.4 MB``."""
    counts = byte_counts(row)
    return "bytes " + ", ".join(f"{k} {human_bytes(counts[k])}" for k in KINDS)


def duration(seconds: float) -> str:
    """``3725.2`` → ``1:02:05``; ``--:--`` when unknown."""
    if not math.isfinite(seconds) or seconds < 0:
        return "--:--"
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"
