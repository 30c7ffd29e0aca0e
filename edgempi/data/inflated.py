"""Inflated copies of gzipped IDX files, so that a run reads 47 MB of Fashion-MNIST's training
images instead of inflating 26 MB (0.3 s on every rank, a tenth of a run's start-up).

A copy is named after its file's name and the CRC-32 and length that the gzip file carries in its
own trailer, and is read only when its contents have that CRC-32 and length: a damaged copy is
never used (it is removed and the file inflated again), and a changed file gets a copy of its own.
The same file in several folders (MNIST and Fashion-MNIST share file names but not trailers; a
job that stages its data per run does not) shares one copy. Copies live in ``$EDGEMPI_CACHE``
(default ``$XDG_CACHE_HOME/edgempi`` or ``~/.cache/edgempi``); ``EDGEMPI_CACHE=off`` keeps none.
A cache folder that cannot be read or written only costs the inflation.
"""
from __future__ import annotations

import os
import struct
import time
import zlib
from pathlib import Path

Buffer = bytes | bytearray | memoryview  # an IDX file's header and its values (ndarray.data)
STALE_PARTIAL_S = 600  # a partial copy this old was left by a writer that died


def cache_dir() -> Path | None:
    """The folder of the copies, or None when ``EDGEMPI_CACHE`` turns them off."""
    chosen = os.environ.get("EDGEMPI_CACHE")
    if chosen is not None:
        return None if chosen.strip().lower() in ("", "off", "0", "none") else Path(chosen).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser() / "edgempi"


def trailer(path: Path) -> tuple[int, int] | None:
    """(CRC-32, length mod 2³²) of the inflated data, from the last 8 bytes of a gzip file."""
    try:
        with open(path, "rb") as f:
            f.seek(-8, os.SEEK_END)
            tail = f.read(8)
    except OSError:
        return None
    return struct.unpack("<II", tail) if len(tail) == 8 else None


def copy_path(path: Path, folder: Path, check: tuple[int, int]) -> Path:
    """Where the inflated copy of ``path`` lies; ``check`` is its trailer, which tells apart
    files of one name (MNIST's and Fashion-MNIST's) and a file that changed."""
    return folder / f"{path.name.removesuffix('.gz')}-{check[0]:08x}-{check[1]}.idx"


def copy_of(path: Path) -> Path | None:
    """The inflated copy kept for gzip file ``path``, if there is one: to be read as an IDX
    file and then checked with :func:`holds`."""
    folder, check = cache_dir(), trailer(path)
    if folder is None or check is None:
        return None
    copy = copy_path(path, folder, check)
    try:
        copy.stat()  # not is_file(): it lets a folder that may not be searched raise
    except OSError:
        return None
    return copy


def holds(path: Path, parts: tuple[Buffer, ...]) -> bool:
    """Whether ``parts`` (read from a copy, in order) are the inflated contents of ``path``:
    their CRC-32 and length are the ones in its gzip trailer."""
    return _check(parts) == trailer(path)


def discard(copy: Path) -> None:
    """Remove a damaged copy (copies appear whole, by rename), for the inflated file to replace;
    one that may not be removed stays, and the file is inflated each time."""
    try:
        copy.unlink(missing_ok=True)
    except OSError:
        pass


def write(path: Path, parts: tuple[Buffer, ...]) -> None:
    """Keep the inflated contents of ``path`` (``parts`` in order) when they match its trailer.
    One writer at a time (a partial file taken exclusively, then renamed into place), so the
    ranks of a job starting together write one copy and never a torn one; a failure to write
    is ignored."""
    folder, check = cache_dir(), trailer(path)
    if folder is None or check != _check(parts):
        return
    target = copy_path(path, folder, check)
    partial = target.with_suffix(".partial")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd = None if target.exists() else _claim(partial)
        if fd is None:
            return
        with os.fdopen(fd, "wb") as f:
            try:
                f.writelines(parts)
                f.flush()
                os.replace(partial, target)
            except OSError:  # a full disk, say: no copy this time
                if os.path.samestat(os.fstat(f.fileno()), os.stat(partial)):  # ours, not a later writer's
                    partial.unlink()
    except OSError:
        return


def _check(parts: tuple[Buffer, ...]) -> tuple[int, int]:
    """(CRC-32, length mod 2³²) of ``parts`` one after another, as a gzip trailer holds them."""
    crc, length = 0, 0
    for part in parts:
        crc, length = zlib.crc32(part, crc), length + memoryview(part).nbytes
    return crc, length & 0xFFFFFFFF


def _claim(partial: Path) -> int | None:
    """A descriptor of ``partial``, created here exclusively (this process writes the copy), or
    None when another writer holds it; one left by a dead writer long ago is removed, for the
    next run to claim. The copy is written through the descriptor, never reopened by name, so
    two writers never share a file."""
    try:
        return os.open(partial, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        if time.time() - partial.stat().st_mtime > STALE_PARTIAL_S:
            partial.unlink(missing_ok=True)
        return None
