"""Read results files into per-run tables, also files a job is still writing.

A results directory collects files of many ages, from crashed jobs, from other tools and
from runs still in progress, so reading is forgiving: a file that is not a readable
``edgempi/1`` results file is skipped with one line on stderr and the rest are still read.
A file a job is writing or was writing when it was killed is read by a child process with a
deadline (``edgempi.util.guard``), because HDF5 can retry for minutes on such a file whose metadata
is damaged.
"""
from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from edgempi.settings import ConfigError, printable
from edgempi.util import guard, yamltext

SCHEMA = "edgempi/1"
TABLES = ("steps", "evals", "syncs")
# The x axes of plots and the "to target" columns of reports, as sums of table columns.
AXES = {"step": ("step",), "epoch": ("epoch",), "round": ("rounds",), "bytes": ("bytes_up", "bytes_down"),
        "time": ("wall_s",), "simtime": ("sim_s",)}


class RunReadError(ValueError):
    """A file that cannot be read as an edgempi results file (the message says why)."""


@dataclass
class Run:
    """One run: its root attributes, flattened config and one dict of columns per table.

    ``config`` maps dotted keys (``train.lr``, ``algorithm.name``) to values, so runs of a
    sweep can be grouped and told apart by any key; every value hashes (see :func:`frozen`).
    """

    path: Path
    attrs: dict[str, Any]
    config: dict[str, Any]
    tables: dict[str, dict[str, np.ndarray]]
    partition: np.ndarray | None = None
    size: int = 0

    @property
    def status(self) -> str:
        return str(self.attrs.get("status", "unknown"))

    @property
    def name(self) -> str:
        return self.path.stem

    @property
    def steps(self) -> dict[str, np.ndarray]:
        return self.tables["steps"]

    @property
    def evals(self) -> dict[str, np.ndarray]:
        return self.tables["evals"]

    @property
    def syncs(self) -> dict[str, np.ndarray]:
        return self.tables["syncs"]

    def value(self, key: str) -> Any:
        """A config key, or a root attribute (``world_size``, ``status``) if no config key has that name."""
        if key in self.config:
            return self.config[key]
        return self.attrs.get(key)


def axis(table: Mapping[str, np.ndarray], name: str) -> np.ndarray:
    """Values of axis ``name`` (see AXES) for every row of ``table``; NaN where a column is absent."""
    if name not in AXES:
        raise ValueError(f"unknown axis {name!r} (choose from {', '.join(AXES)})")
    n = min((len(v) for v in table.values()), default=0)
    return sum((np.asarray(table.get(c, np.full(n, np.nan)), dtype=float)[:n] for c in AXES[name]),
               np.zeros(n))


def _read_table(group: h5py.Group) -> dict[str, np.ndarray]:
    """The table's rows, cut to the length every column has reached.

    The writer appends column by column and flushes once per row, so a reader of a running
    file can see some columns one row ahead of the others.
    """
    data = {}
    for name, ds in group.items():
        if isinstance(ds, h5py.Dataset) and ds.ndim == 1:
            ds.refresh()
            data[name] = ds[()]
    n = min((len(v) for v in data.values()), default=0)
    return {name: values[:n] for name, values in data.items()}


def frozen(value: Any) -> Any:
    """``value`` made hashable all the way down, so runs can be grouped and told apart by it:
    lists (``parallel.groups: [[0, 1], [2, 3]]``) become tuples, a mapping inside a list a tuple
    of (key, value) pairs, a set a frozenset."""
    if isinstance(value, (list, tuple)):
        return tuple(frozen(v) for v in value)
    if isinstance(value, Mapping):
        return tuple((k, frozen(v)) for k, v in value.items())
    if isinstance(value, (set, frozenset)):
        return frozenset(frozen(v) for v in value)
    return value


def flatten(mapping: Mapping[Any, Any], prefix: str = "") -> dict[str, Any]:
    """``{"train": {"lr": 0.1}}`` → ``{"train.lr": 0.1}``, values :func:`frozen`."""
    flat: dict[str, Any] = {}
    for key, value in mapping.items():
        dotted = f"{prefix}{printable(str(key))}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{dotted}."))
        else:
            flat[dotted] = frozen(value)
    return flat


def stored_config(text: Any) -> dict[str, Any]:
    """The config a results file stores, parsed with the config loader's limits (size, alias
    expansion, repeated keys): it is text whoever wrote the file controls."""
    if text is None:
        return {}
    if not isinstance(text, str):
        raise RunReadError(f"its config attribute is a {type(text).__name__}, not YAML text")
    try:
        raw = yamltext.parse(text, "config", "stored config")
    except ConfigError as exc:
        raise RunReadError(f"its config attribute: {exc.reason}") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise RunReadError("its config attribute is not a mapping")
    return raw


def _attr(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, np.generic):
        return value.item()
    return value


SIGNATURE = b"\x89HDF\r\n\x1a\n"


def _superblock(path: Path) -> tuple[int, bytes] | None:
    """Where the superblock starts and its first 48 bytes (None if the file has none)."""
    size = path.stat().st_size
    with path.open("rb") as fh:
        base = 0
        while base + 48 <= size:  # the superblock sits at 0, 512, 1024, 2048, ... (after a user block)
            fh.seek(base)
            head = fh.read(48)
            if head[:8] == SIGNATURE:
                return base, head
            base = 512 if base == 0 else base * 2
    return None


def _stored_eof(path: Path) -> int | None:
    """End-of-file address a version 2/3 superblock records (None if there is no such superblock).

    HDF5 skips its truncation check in SWMR read mode, because a writer may be growing the
    file, and then retries reads past the end for ever; so the check is made here first.
    """
    found = _superblock(path)
    if found is None:
        return None
    base, head = found
    version, width = head[8], head[9]
    if version < 2 or width not in (4, 8):
        return None
    start = 12 + 2 * width  # after version, widths, flags, base and extension addresses
    return base + int.from_bytes(head[start:start + width], "little")


def _closed_cleanly(path: Path) -> bool:
    """Does a version 2/3 superblock say no writer has the file open (consistency flags 0)?
    Read from the bytes: even opening a damaged file whose writer was killed can hang HDF5."""
    try:
        found = _superblock(path)
    except OSError:
        return False
    return found is not None and found[1][8] >= 2 and found[1][11] == 0


def open_results(path: Path) -> h5py.File:
    """Open a finished file, or a file a job is writing (or was writing when it was killed).

    A plain open checks the file whole; it refuses a file whose writer is (or was) in SWMR
    mode, and only that file is opened for SWMR reading, after its length is checked.
    """
    try:
        return h5py.File(path, "r")
    except OSError as exc:
        if "already open for write" not in str(exc):
            raise
    eof = _stored_eof(path)
    if eof is not None and path.stat().st_size < eof:
        raise RunReadError(f"truncated: {path.stat().st_size} bytes, its superblock says {eof}")
    return h5py.File(path, "r", libver="latest", swmr=True)


def read_run(path: str | Path, timeout: float = guard.DEFAULT_TIMEOUT_S) -> Run:
    """Read one results file within ``timeout`` seconds; raises RunReadError with a one-line reason."""
    return _bounded(read_run_here, Path(path), timeout)


def read_status(path: str | Path, timeout: float = guard.DEFAULT_TIMEOUT_S) -> str:
    """The root ``status`` of a results file, within ``timeout`` seconds; RunReadError if unreadable."""
    return _bounded(read_status_here, Path(path), timeout)


def _bounded(reader: Any, path: Path, timeout: float) -> Any:
    """``reader(path)`` here for a file whose writer closed it (outside SWMR mode HDF5 does not
    retry: no damaged byte of such a file made a read hang, tried at every 400th byte), in a
    child with a deadline for any other file (~50 ms more): one a writer has, or had when it
    was killed, open in SWMR mode, an old or damaged superblock, or no HDF5 file at all."""
    if _closed_cleanly(path):
        return reader(path)
    try:
        return guard.call(f"{__name__}:{reader.__name__}", path, timeout=timeout)
    except guard.Timeout as exc:
        raise RunReadError(f"{exc} (damaged metadata?)") from exc


def read_status_here(path: Path) -> str:
    """:func:`read_status` in this process, without a deadline."""
    try:
        with open_results(path) as f:
            return str(_attr(f.attrs.get("status")))
    except RunReadError:
        raise
    except (OSError, KeyError, ValueError, RuntimeError) as exc:
        raise _unreadable(exc) from exc


def _unreadable(exc: Exception) -> RunReadError:
    return RunReadError(f"unreadable HDF5 ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})")


def read_run_here(path: Path) -> Run:
    """:func:`read_run` in this process, without a deadline."""
    try:
        with open_results(path) as f:
            attrs = {k: _attr(v) for k, v in f.attrs.items()}
            if attrs.get("schema") != SCHEMA:
                found = attrs.get("schema")
                raise RunReadError(f"not an edgempi results file (schema {found!r}, expected {SCHEMA!r})")
            raw = stored_config(attrs.get("config"))
            tables = {t: _read_table(f[t]) if isinstance(f.get(t), h5py.Group) else {} for t in TABLES}
            counts = f.get("partition/counts")
            partition = counts[()] if isinstance(counts, h5py.Dataset) else None
    except RunReadError:
        raise
    except (OSError, KeyError, ValueError, RuntimeError) as exc:
        raise _unreadable(exc) from exc
    if isinstance(attrs.get("versions"), str):
        try:
            attrs["versions"] = json.loads(attrs["versions"])
        except json.JSONDecodeError:
            pass
    return Run(path=path, attrs=attrs, config=flatten(raw), tables=tables, partition=partition,
               size=path.stat().st_size)


def find_files(paths: Iterable[str | Path]) -> list[Path]:
    """Files given, plus every ``*.h5`` below the directories given, in a stable order."""
    found: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found.extend(sorted(q for q in p.rglob("*.h5") if q.is_file()))
        else:
            found.append(p)
    return list(dict.fromkeys(found))


def load_runs(paths: str | Path | Iterable[str | Path]) -> list[Run]:
    """Every readable run among ``paths`` (files, or directories searched for ``*.h5``).

    Anything unreadable (missing, truncated, foreign) is skipped with a one-line warning on
    stderr, so one bad file never hides the others.
    """
    if isinstance(paths, (str, Path)):
        paths = [paths]
    runs = []
    for path in find_files(paths):
        try:
            runs.append(read_run(path))
        except RunReadError as exc:
            print(printable(f"edgempi: skipping {path}: {exc}"), file=sys.stderr)
    return runs


def _repeat(value: Any, n: int) -> np.ndarray:
    """n copies of one value in an object array (a tuple stays one cell, not a row)."""
    cell = np.empty(1, dtype=object)
    cell[0] = value
    return cell.repeat(n)


def tidy(runs: Iterable[Run], table: str = "evals") -> dict[str, np.ndarray]:
    """One long table over all runs: the table's rows, each with its run's file and config keys.

    Columns a run lacks are NaN (numbers) or None (config values); config columns are object
    arrays because a key may hold strings, numbers or None.
    """
    runs = list(runs)
    lengths = [min((len(v) for v in r.tables[table].values()), default=0) for r in runs]
    total = sum(lengths)
    data_keys = sorted({k for r in runs for k in r.tables[table]})
    config_keys = sorted({k for r in runs for k in r.config})
    out: dict[str, np.ndarray] = {"run": np.empty(total, dtype=object)}
    out.update({k: np.full(total, np.nan) for k in data_keys})
    out.update({k: np.full(total, None, dtype=object) for k in config_keys if k not in out})
    start = 0
    for run, n in zip(runs, lengths):
        rows = slice(start, start + n)
        out["run"][rows] = str(run.path)
        for k, values in run.tables[table].items():
            out[k][rows] = values[:n]
        for k in config_keys:
            if k not in data_keys:
                out[k][rows] = _repeat(run.config.get(k), n)
        start += n
    return out
