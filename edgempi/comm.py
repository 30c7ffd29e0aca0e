"""The only module that calls MPI.

Every exchange of the training methods goes through a :class:`Comm`, which keeps the
:class:`Ledger`: rounds, per-device bytes up/down, control bytes and seconds spent in
collectives. Bytes follow a star model: what one device would send to and receive from a
central server for the exchange, whatever the collective really moved between ranks.
Every collective counts its own bytes, so the figures in a results file are the figures of the
traffic that really happened; a method builds its own patterns (Kamp's balancing in
:mod:`edgempi.algorithms.dynamic`) from these collectives. Each exchange is also told
to an :class:`ExchangeObserver` (the simulated clock of :mod:`edgempi.sim`, which this module
does not know), and the few MPI calls that other modules need (a node's ranks, the job's
abort) are thin helpers here, so no other module imports MPI.

Collectives work on flat tensors through zero-copy numpy views: one MPI call per exchange, or
one per bucket of a gradient whose exchange overlaps backward (:class:`SegmentedMean`).
"""
from __future__ import annotations

import contextlib
import copy
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, fields
from typing import Any, Protocol, TypeVar

import numpy as np
import torch
from numpy.typing import ArrayLike

from edgempi.util.scratch import Scratch

try:  # mpi4py initialises MPI on import; the CLI imports this module only to run.
    from mpi4py import MPI
except ImportError as exc:  # pragma: no cover - exercised only without mpi4py installed
    raise SystemExit(f"edgempi: mpi4py is not installed ({exc}); pip install mpi4py") from exc

Rows = TypeVar("Rows", torch.Tensor, np.ndarray)  # a rank's devices' rows: model-sized tensors or control arrays


@dataclass
class Ledger:
    """Cumulative traffic of this rank's devices, as a central server would see them, and the
    seconds they spent in collectives (each device of the rank waited for each one)."""

    rounds: int = 0
    bytes_up: int = 0
    bytes_down: int = 0
    ctrl_bytes: int = 0
    comm_s: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


class ExchangeObserver(Protocol):
    """Told of every counted exchange (e.g. :class:`edgempi.sim.Clock`)."""

    def exchanged(self, up: np.ndarray, down: np.ndarray, seconds: float) -> None:
        """Each device of this rank sent ``up[i]`` and received ``down[i]`` bytes; the rank
        waited ``seconds`` (measured) for the exchange."""


def numpy_view(tensor: torch.Tensor) -> np.ndarray:
    """A numpy array sharing memory with a contiguous CPU tensor (no copy)."""
    if not tensor.is_contiguous():
        raise ValueError("collectives need a contiguous tensor")
    return tensor.detach().numpy()


class Comm:
    """Collectives of one group of devices, with the ledger of what they cost.

    A rank may stand for several devices (``parallel.devices_per_rank``): then a buffer holds one
    row per device of this rank, rows are combined locally before the one MPI collective (in
    :func:`_share`, the one place that does), and the ledger counts every device's traffic as if
    each were a rank (:meth:`count`).
    """

    def __init__(self, mpi_comm: Any = None, local: int = 1, observer: ExchangeObserver | None = None) -> None:
        self.mpi = MPI.COMM_WORLD if mpi_comm is None else mpi_comm
        self.rank: int = self.mpi.Get_rank()
        self.size: int = self.mpi.Get_size()
        self.ledger = Ledger()
        self._scratch = Scratch()  # the float16 sum's and the gathers' work buffers
        self.host(local, observer)

    def host(self, local: int, observer: ExchangeObserver | None = None) -> None:
        """This rank simulates ``local`` devices (one row each in a buffer), and ``observer``
        (None: nobody) hears of every exchange they make."""
        self.local = local
        self.observer = observer

    @property
    def devices(self) -> int:
        """How many devices the group holds: ranks × devices per rank."""
        return self.size * self.local

    @property
    def first(self) -> int:
        """The index of this rank's first device among all devices of the group."""
        return self.rank * self.local

    def mine(self, mask: np.ndarray) -> np.ndarray:
        """This rank's devices' entries of a mask over all devices of the group."""
        return mask[self.first:self.first + self.local]

    # -- model-sized exchanges (counted as rounds) -------------------------------------
    def allreduce_mean_(self, buf: torch.Tensor, participants: np.ndarray | None = None) -> int:
        """Average a flat buffer over the reporting devices in place: one round, 4·d up and down.
        Returns how many devices reported (0: nothing was exchanged, every buffer is as it was).

        ``buf`` is one row per device of this rank (a 1-D buffer with one device). The devices
        that report are the ``participants`` (a boolean mask over all devices, the same on every
        rank; None: all), e.g. those a sample asked less the stragglers the simulated clock cut
        (:meth:`edgempi.sim.Clock.reporters`). The others contribute zeros to the one Allreduce
        and upload nothing in the ledger; every device downloads the result.
        """
        start = time.perf_counter()
        rows = buf.view(self.local, -1)
        nbytes = rows.shape[1] * rows.element_size()
        reported = self.devices if participants is None else int(participants.sum())
        mine = None if participants is None else self.mine(participants)  # None: all of them
        if reported == 0:  # the server waited (until the deadline, if any) for nobody
            self.count(0, 0, start, rounds=0)
            return 0
        total = _share(rows, "sum", mine)
        self.mpi.Allreduce(MPI.IN_PLACE, numpy_view(total), op=MPI.SUM)
        total.div_(reported)
        if self.local > 1:
            rows.copy_(total.expand_as(rows))
        self.count(nbytes if mine is None else np.where(mine, nbytes, 0), nbytes, start)
        return reported

    # -- payloads summed or gathered (compression, a method's own patterns): counted as sent --
    def allreduce_sum_(self, buf: torch.Tensor, rounds: int = 1, down_bytes: int | np.ndarray | None = None,
                       up_bytes: int | np.ndarray | None = None) -> None:
        """Sum a summable payload (fp32, fp16 ...) over ranks in place.

        Counts the payload's own bytes up and down unless stated (one number for each device of
        this rank, or one per device: e.g. only the devices that had not sent their row yet
        upload); ``rounds`` is 0 for the later collectives of an exchange that needs several
        (PowerSGD's second factor).
        """
        start = time.perf_counter()
        arr = numpy_view(buf)
        if arr.dtype == np.float16:
            _sum_half_(self.mpi, self._scratch, arr)
        else:
            self.mpi.Allreduce(MPI.IN_PLACE, arr, op=MPI.SUM)
        self.count(arr.nbytes if up_bytes is None else up_bytes, arr.nbytes if down_bytes is None else down_bytes,
                    start, rounds)

    def allgather_parts(self, parts: Sequence[np.ndarray | torch.Tensor],
                        down_bytes: int | None = None) -> list[list[np.ndarray]]:
        """Gather every device's payload of typed parts (values, indices, norms ...): one round,
        one Allgatherv. Every device passes the same number of parts with the same dtypes; the
        sizes may differ. Returns, per device, its parts with their dtypes.

        The part sizes travel first as framing (a few integers), not counted as payload.
        """
        start = time.perf_counter()
        arrays = [numpy_view(p) if isinstance(p, torch.Tensor) else np.ascontiguousarray(p) for p in parts]
        data = np.concatenate([a.view(np.uint8).ravel() for a in arrays]) if arrays else np.zeros(0, np.uint8)
        part_sizes = np.array(self.mpi.allgather([a.nbytes for a in arrays]), dtype=np.int64)
        sizes = part_sizes.sum(axis=1)
        out = np.empty(int(sizes.sum()), dtype=np.uint8)
        offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        self.mpi.Allgatherv(data, [out, sizes, offsets, MPI.BYTE])
        gathered = []
        for offset, row in zip(offsets, part_sizes):
            ends = offset + np.cumsum(row)
            gathered.append([_typed(out[end - size:end], a.dtype) for end, size, a in zip(ends, row, arrays)])
        down = int(sizes.sum() - data.nbytes) if down_bytes is None else down_bytes
        self.count(data.nbytes, down, start)
        return gathered

    def allgather_rows(self, parts: Sequence[torch.Tensor], down_bytes: int | None = None) -> list[np.ndarray]:
        """Gather payload parts whose sizes are the same on every device (they follow from the
        vector's length and the settings alone): part i comes back as one (devices, n_i) array
        in rank order, so a decoder can treat all devices in one operation. One round, one
        Allgather, no framing; counted as :meth:`allgather_parts` counts the same payload.
        The arrays live in a buffer of the comm layer, valid until the next call.
        """
        start = time.perf_counter()
        arrays = [numpy_view(p).view(np.uint8).ravel() for p in parts]
        data = np.concatenate(arrays)
        out = numpy_view(self._scratch.get("rows", self.size * data.nbytes, torch.uint8)).reshape(self.size, -1)
        self.mpi.Allgather(data, out)
        rows, offset = [], 0
        for part, a in zip(parts, arrays):
            rows.append(_typed_rows(out[:, offset:offset + a.nbytes], numpy_view(part).dtype))
            offset += a.nbytes
        self.count(data.nbytes, (self.size - 1) * data.nbytes if down_bytes is None else down_bytes, start)
        return rows

    # -- a model split over ranks: tiles and halos (bytes, not rounds) ----------------
    def alltoallv_(self, send: torch.Tensor, send_counts: Sequence[int],
                   recv: torch.Tensor, recv_counts: Sequence[int]) -> None:
        """Send ``send_counts[q]`` consecutive elements of ``send`` to each device q and fill
        ``recv`` in rank order: one call moves every tile and halo of a group boundary.

        Bytes count what leaves and enters this device; its part to itself is a local copy.
        """
        start = time.perf_counter()
        s_arr, r_arr = numpy_view(send), numpy_view(recv)
        s_counts, r_counts = np.asarray(send_counts, np.int64), np.asarray(recv_counts, np.int64)
        s_displs = np.concatenate([[0], np.cumsum(s_counts)[:-1]])
        r_displs = np.concatenate([[0], np.cumsum(r_counts)[:-1]])
        self.mpi.Alltoallv([s_arr, (s_counts, s_displs)], [r_arr, (r_counts, r_displs)])
        item = s_arr.itemsize
        self.count(int(s_counts.sum() - s_counts[self.rank]) * item,
                    int(r_counts.sum() - r_counts[self.rank]) * item, start, rounds=0)

    def allgatherv_(self, send: torch.Tensor, recv: torch.Tensor, counts: Sequence[int]) -> None:
        """Gather every device's block (``counts[r]`` elements) into ``recv`` in rank order."""
        start = time.perf_counter()
        r_counts = np.asarray(counts, np.int64)
        displs = np.concatenate([[0], np.cumsum(r_counts)[:-1]])
        s_arr = numpy_view(send)
        self.mpi.Allgatherv(s_arr, [numpy_view(recv), (r_counts, displs)])
        self.count(s_arr.nbytes, int(r_counts.sum() - r_counts[self.rank]) * s_arr.itemsize, start, rounds=0)

    # -- small control collectives (counted as control bytes, not rounds) --------------
    def control(self, values: ArrayLike, op: str = "sum") -> np.ndarray:
        """A small float32 vector of control values (violation flags, FDA state) from every
        device: reduced over the devices by ``op`` (sum, max, min), or with ``op`` "gather" every
        device's vector, one row per device in device order, what a coordinator hears from each.
        Control bytes, no round. ``values`` is one vector, or one row per device of this rank."""
        start = time.perf_counter()
        rows = np.ascontiguousarray(np.asarray(values, dtype=np.float32).reshape(self.local, -1))
        if op == "gather":
            out = np.empty((self.size, *rows.shape), dtype=np.float32)
            self.mpi.Allgather(rows, out)
            out = out.reshape(self.devices, -1)
        else:
            out = _reduce(self.mpi, _share(rows, op), op)
        self.count(rows[0].nbytes, rows[0].nbytes, start, ctrl=True)
        return out

    # -- the ledger ---------------------------------------------------------------------
    def count(self, up: int | np.ndarray, down: int | np.ndarray, start: float, rounds: int = 1,
              ctrl: bool = False) -> None:
        """Count an exchange that began at ``start``: bytes per device of this rank (one number:
        the same for each), as payload or, with ``ctrl``, as control bytes; then tell the observer.
        Every collective here calls it; a method calls it itself only for traffic that needs no
        MPI call, such as a coordinator's answer that every rank has already computed.
        Plain integers stay integers: this runs once per exchange, right after the collective,
        when numpy's array machinery is out of cache (~80 µs a step on LeNet-5, measured)."""
        if ctrl:
            self.ledger.ctrl_bytes += _total(up, self.local)
        else:
            self.ledger.rounds += rounds * self.local
            self.ledger.bytes_up += _total(up, self.local)
            self.ledger.bytes_down += _total(down, self.local)
        elapsed = time.perf_counter() - start
        self.ledger.comm_s += elapsed * self.local  # every device waited for it
        if self.observer is not None:
            up, down = (np.broadcast_to(np.asarray(v, np.int64), (self.local,)) for v in (up, down))
            self.observer.exchanged(up, down, elapsed)

    # -- measurement and set-up (not part of the method's traffic) ---------------------
    def reduce_metrics(self, values: Sequence[float] | np.ndarray, op: str = "sum") -> np.ndarray:
        """Reduce metrics for the record; not counted: it is the benchmark's, not the method's."""
        return _reduce(self.mpi, np.ascontiguousarray(values, dtype=np.float64), op)

    @contextlib.contextmanager
    def uncounted(self) -> Iterator[None]:
        """Collectives inside are measurement (e.g. an evaluation's mean model, or the tile
        exchanges of its forward pass where a model is split over ranks), not the method's traffic:
        the ledger is left as it was before, and the observer hears nothing."""
        saved, observer = copy.deepcopy(self.ledger.as_dict()), self.observer
        self.observer = None
        try:
            yield
        finally:
            self.observer = observer
            for key, value in saved.items():
                setattr(self.ledger, key, value)

    def broadcast_(self, buf: torch.Tensor, root: int = 0) -> None:
        """Give every device root's copy of a buffer (initial model); not counted."""
        self.mpi.Bcast(numpy_view(buf), root=root)

    def allgather_object(self, obj: Any, node: bool = False) -> list[Any]:
        """Every rank's picklable ``obj``, in rank order (one rank's, e.g. a decision taken on
        rank 0, is its entry); with ``node``, only those of the ranks of this rank's node (the
        ranks sharing its memory). Not counted: set-up and bookkeeping, not a method's traffic."""
        if not node:
            return self.mpi.allgather(obj)
        group = self.mpi.Split_type(MPI.COMM_TYPE_SHARED)
        try:
            return group.allgather(obj)
        finally:
            group.Free()

    def barrier(self, idle: Callable[[], object] | None = None) -> None:
        """Wait until every rank is here: in MPI's own wait (which spins), or, with ``idle``,
        calling it between tests of a non-blocking barrier (e.g. a sleep, so that waiting ranks
        leave shared cores to one that works)."""
        if idle is None:
            self.mpi.Barrier()
            return
        request = self.mpi.Ibarrier()
        while not request.Test():
            idle()

    def split(self, color: int, key: int | None = None, share_ledger: bool = False) -> Comm:
        """A sub-group (e.g. the ranks of one device that spans several). Its ledger starts at
        zero, or is this one's with ``share_ledger`` (and its observer this one's), so a device's
        traffic in all its groups adds up."""
        child = Comm(self.mpi.Split(color, self.rank if key is None else key), self.local)
        if share_ledger:
            child.ledger, child.observer = self.ledger, self.observer
        return child

    def mpi_abort(self, code: int = 1) -> None:
        """Make MPI end every rank of the job now (see :func:`edgempi.watchdog.abort`)."""
        self.mpi.Abort(code)



class Heartbeats:
    """Every rank's latest heartbeat (a few integers) to rank 0, by messages that never block.

    A rank's watchdog thread calls :meth:`send` now and then, rank 0's calls :meth:`latest`;
    neither ever waits for a peer, so a stopped or hung peer just falls silent, and what rank
    0 last heard from it says where it stopped. The messages travel on a communicator of their
    own (no message of the training can match them) and need MPI_THREAD_MULTIPLE, which
    mpi4py asks for; with less, :attr:`usable` is False and nothing is sent. A sender keeps at
    most one message in flight, so a silent rank 0 never piles them up.
    """

    TAG = 1

    def __init__(self, comm: Comm) -> None:
        """Opens the channel on ``comm``'s ranks (collective: every rank builds it once)."""
        self.mpi, self.rank = comm.mpi.Dup(), comm.rank
        self.usable = MPI.Query_thread() == MPI.THREAD_MULTIPLE
        self._out = np.zeros(0, np.int64)
        self._request: Any = None

    def send(self, values: Sequence[int]) -> None:
        """Tell rank 0 ``values`` unless the previous message is still on its way (a rank 0
        that does not listen any more)."""
        if not self.usable or self.rank == 0 or (self._request is not None and not self._request.Test()):
            return
        self._out = np.asarray(values, np.int64)
        self._request = self.mpi.Isend(self._out, dest=0, tag=self.TAG)

    def latest(self, width: int) -> dict[int, np.ndarray]:
        """Rank 0: the newest message of each rank that sent any since the last call."""
        found: dict[int, np.ndarray] = {}
        status = MPI.Status()
        while self.usable and self.mpi.Iprobe(source=MPI.ANY_SOURCE, tag=self.TAG, status=status):
            values = np.zeros(width, np.int64)
            self.mpi.Recv(values, source=status.Get_source(), tag=self.TAG)
            found[status.Get_source()] = values
        return found


class SegmentedMean:
    """The mean of a flat buffer over all ranks, its segments summed by non-blocking Allreduce.

    Bit-identical to :meth:`Comm.allreduce_mean_`: each element is summed over the ranks
    (MPI reduces elementwise, whatever the segment) and then divided by the device count, a
    segment as soon as its sum is in. Every rank must :meth:`start` the same segments in the
    same order. MPI moves a non-blocking collective only inside MPI calls, so the caller calls
    :meth:`progress` now and then (a backward hook). The ledger holds one round per
    :meth:`finish`, with the bytes of :meth:`Comm.allreduce_mean_`; its seconds are the wait
    at :meth:`finish` (the rest ran under backward, counted as local work).
    """

    def __init__(self, comm: Comm, buf: torch.Tensor) -> None:
        """The mean of ``buf`` over ``comm``'s ranks, one device each, every device reporting."""
        if comm.local != 1:
            raise ValueError("a segmented mean needs one device per rank")
        self.comm, self.buf = comm, buf
        self.requests: list[Any] = []
        self.segments: list[torch.Tensor] = []

    def start(self, lo: int, hi: int) -> None:
        """Begin summing ``buf[lo:hi]`` over the ranks, in place."""
        segment = self.buf[lo:hi]
        self.segments.append(segment)
        self.requests.append(self.comm.mpi.Iallreduce(MPI.IN_PLACE, numpy_view(segment), op=MPI.SUM))

    def progress(self) -> None:
        """Let MPI move the started sums along, and divide those that are in (returns at once)."""
        self._divide(MPI.Request.Testsome(self.requests) if self.requests else None)

    def finish(self) -> int:
        """Wait for every started sum: ``buf`` holds the mean of every device's buffer.
        Returns how many devices reported (all of them)."""
        start = time.perf_counter()
        while (done := MPI.Request.Testsome(self.requests)) is not None:
            self._divide(done)
            if not done:
                os.sched_yield()  # a rank that waits leaves its core to one still computing
        self.requests.clear()
        self.segments.clear()
        nbytes = self.buf.numel() * self.buf.element_size()
        self.comm.count(nbytes, nbytes, start)
        return self.comm.devices

    def _divide(self, done: list[int] | None) -> None:
        for index in done or ():
            self.segments[index].div_(self.comm.devices)


def _sum_half_(mpi: Any, scratch: Scratch, arr: np.ndarray) -> None:
    """Sum a float16 vector over ranks in place, adding in torch (in float32, rounded once).

    MPICH adds float16 in software, 5–10× slower than a float32 Allreduce of twice the
    bytes, and other MPIs may not know the type. So: a reduce-scatter by Alltoallv of raw
    16-bit words, each rank sums its slice, an Allgatherv of the slices — the traffic of a
    ring Allreduce, and every rank ends with the same bits.
    """
    size, rank, words = mpi.Get_size(), mpi.Get_rank(), arr.view(np.uint16)
    counts = np.array([arr.size // size + (r < arr.size % size) for r in range(size)], np.int64)
    displs = np.concatenate([[0], np.cumsum(counts)[:-1]])
    mine = int(counts[rank])
    pieces = scratch.get("pieces", size * mine, torch.float16)
    mpi.Alltoallv([words, (counts, displs)],
                  [numpy_view(pieces).view(np.uint16), (np.full(size, mine), np.arange(size) * mine)])
    wide = scratch.get("wide", size * mine, torch.float32).view(size, mine)
    total = torch.sum(wide.copy_(pieces.view(size, mine)), 0, out=scratch.get("total", mine, torch.float32))
    ours = scratch.get("ours", mine, torch.float16).copy_(total)
    mpi.Allgatherv(numpy_view(ours).view(np.uint16), [words, (counts, displs)])


def _reduce(mpi: Any, arr: np.ndarray, op: str) -> np.ndarray:
    """``arr`` reduced over ``mpi``'s ranks by ``op`` (sum, max, min), into a new array."""
    out = np.empty_like(arr)
    mpi.Allreduce(arr, out, op=_OPS[op])
    return out


def _share(rows: Rows, op: str, mine: np.ndarray | None = None) -> Rows:
    """What a rank adds to a reduction over devices: its devices' rows (those of ``mine``; None:
    all) reduced by ``op`` (torch rows: sum only). The one place where a rank's several devices
    meet before a collective. A rank of one device adds its row itself, without a copy (zeroed
    if it does not take part: the collective's result overwrites it)."""
    if len(rows) == 1:
        row = rows[0]
        if mine is not None and not mine[0]:
            row[:] = 0
        return row
    if mine is not None:
        rows = rows[torch.from_numpy(mine)] if isinstance(rows, torch.Tensor) else rows[mine]
    return rows.sum(0) if op == "sum" else getattr(rows, op)(axis=0)


def _total(nbytes: int | np.ndarray, local: int) -> int:
    """Bytes of all this rank's devices: given per device, or one number for each of ``local``."""
    return int(nbytes.sum()) if isinstance(nbytes, np.ndarray) else int(nbytes) * local


def _typed(chunk: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Bytes as an array of ``dtype``; copied only if they sit at an address the dtype cannot use."""
    return (chunk if chunk.ctypes.data % dtype.itemsize == 0 else chunk.copy()).view(dtype)


def _typed_rows(block: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Rows of bytes as rows of ``dtype``; copied only if torch could not view them in place.
    (A copy, not ``ascontiguousarray``: a single row counts as contiguous whatever its row
    stride, and torch refuses a stride that is not a whole number of elements.)"""
    if block.ctypes.data % dtype.itemsize or block.strides[0] % dtype.itemsize:
        block = block.copy()
    return block.view(dtype)


_OPS = {"sum": MPI.SUM, "max": MPI.MAX, "min": MPI.MIN}


def mpi_versions() -> dict[str, str]:
    """mpi4py's version and the MPI library's first line, for a results file's ``versions``."""
    import mpi4py

    return {"mpi4py": mpi4py.__version__, "mpi": MPI.Get_library_version().splitlines()[0].strip()}
