"""The only module that calls MPI.

Every exchange of the training methods goes through a :class:`Comm`, which keeps the
:class:`Ledger`: rounds, per-device bytes up/down (the star model of DESIGN.md), control bytes
and seconds spent in collectives. Algorithms never count bytes themselves, so the figures in a
results file are the figures of the traffic that really happened.

Collectives work on flat tensors through zero-copy numpy views: one MPI call per exchange.
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass, fields
from typing import Any, Sequence

import numpy as np
import torch

try:  # mpi4py initialises MPI on import; the CLI imports this module only to run.
    from mpi4py import MPI
except ImportError as exc:  # pragma: no cover - exercised only without mpi4py installed
    raise SystemExit(f"edgempi: mpi4py is not installed ({exc}); pip install mpi4py") from exc


@dataclass
class Ledger:
    """Cumulative traffic of this device, as a central server would see it."""

    rounds: int = 0
    bytes_up: int = 0
    bytes_down: int = 0
    ctrl_bytes: int = 0
    comm_s: float = 0.0

    def as_dict(self) -> dict[str, float]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def numpy_view(tensor: torch.Tensor) -> np.ndarray:
    """A numpy array sharing memory with a contiguous CPU tensor (no copy)."""
    if not tensor.is_contiguous():
        raise ValueError("collectives need a contiguous tensor")
    return tensor.detach().numpy()


class Comm:
    """Collectives of one group of devices, with the ledger of what they cost."""

    def __init__(self, mpi_comm: Any = None) -> None:
        self.mpi = MPI.COMM_WORLD if mpi_comm is None else mpi_comm
        self.rank: int = self.mpi.Get_rank()
        self.size: int = self.mpi.Get_size()
        self.ledger = Ledger()

    # -- model-sized exchanges (counted as rounds) -------------------------------------
    def allreduce_mean_(self, buf: torch.Tensor) -> None:
        """Average a flat buffer over all devices in place: one round, 4·d up and down."""
        start = time.perf_counter()
        arr = numpy_view(buf)
        self.mpi.Allreduce(MPI.IN_PLACE, arr, op=MPI.SUM)
        buf.div_(self.size)
        self._count(arr.nbytes, arr.nbytes, start)

    def allgather_payloads(self, payload: np.ndarray, down_bytes: int | None = None) -> list[np.ndarray]:
        """Gather every device's byte payload (sizes may differ): one round.

        Upload is this device's payload; download defaults to what the server would relay
        (the other devices' payloads) unless the caller states the size of a dense reply.
        """
        start = time.perf_counter()
        data = np.ascontiguousarray(payload).view(np.uint8).ravel()
        sizes = np.array(self.mpi.allgather(data.nbytes), dtype=np.int64)
        out = np.empty(int(sizes.sum()), dtype=np.uint8)
        offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        self.mpi.Allgatherv(data, [out, sizes, offsets, MPI.BYTE])
        parts = [out[o:o + s] for o, s in zip(offsets, sizes)]
        down = int(sizes.sum() - data.nbytes) if down_bytes is None else down_bytes
        self._count(data.nbytes, down, start)
        return parts

    # -- spatial partitioning: sums, tiles and halos ----------------------------------
    def allreduce_sum_(self, buf: torch.Tensor, is_round: bool = True) -> None:
        """Sum a flat buffer over all devices in place.

        The weight gradients of spatially partitioned layers are a round; small sums inside
        a step (BatchNorm statistics, input-gradient halos) pass ``is_round=False`` and count
        only their bytes.
        """
        start = time.perf_counter()
        arr = numpy_view(buf)
        self.mpi.Allreduce(MPI.IN_PLACE, arr, op=MPI.SUM)
        self._count_bytes(arr.nbytes, arr.nbytes, start, is_round)

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
        self._count_bytes(int(s_counts.sum() - s_counts[self.rank]) * item,
                          int(r_counts.sum() - r_counts[self.rank]) * item, start, False)

    def allgatherv_(self, send: torch.Tensor, recv: torch.Tensor, counts: Sequence[int]) -> None:
        """Gather every device's block (``counts[r]`` elements) into ``recv`` in rank order."""
        start = time.perf_counter()
        r_counts = np.asarray(counts, np.int64)
        displs = np.concatenate([[0], np.cumsum(r_counts)[:-1]])
        s_arr = numpy_view(send)
        self.mpi.Allgatherv(s_arr, [numpy_view(recv), (r_counts, displs)])
        self._count_bytes(s_arr.nbytes, int(r_counts.sum() - r_counts[self.rank]) * s_arr.itemsize,
                          start, False)

    def _count_bytes(self, up: int, down: int, start: float, is_round: bool) -> None:
        if is_round:
            self._count(up, down, start)
            return
        self.ledger.bytes_up += up
        self.ledger.bytes_down += down
        self.ledger.comm_s += time.perf_counter() - start

    def _count(self, up: int, down: int, start: float) -> None:
        self.ledger.rounds += 1
        self.ledger.bytes_up += up
        self.ledger.bytes_down += down
        self.ledger.comm_s += time.perf_counter() - start

    # -- small control collectives (counted as control bytes, not rounds) --------------
    def allreduce_ctrl(self, values: Sequence[float] | np.ndarray, op: str = "sum") -> np.ndarray:
        """Reduce a small float32 vector of control values (flags, FDA state): ctrl bytes, no round."""
        start = time.perf_counter()
        arr = np.ascontiguousarray(values, dtype=np.float32)
        out = self._reduce(arr, op)
        self.ledger.ctrl_bytes += arr.nbytes
        self.ledger.comm_s += time.perf_counter() - start
        return out

    # -- measurement and set-up (not part of the method's traffic) ---------------------
    def reduce_metrics(self, values: Sequence[float] | np.ndarray, op: str = "sum") -> np.ndarray:
        """Reduce metrics for the record; not counted: it is the benchmark's, not the method's."""
        return self._reduce(np.ascontiguousarray(values, dtype=np.float64), op)

    def average_uncounted_(self, buf: torch.Tensor) -> None:
        """Average a buffer for measurement (e.g. evaluating the mean model); not counted."""
        self.mpi.Allreduce(MPI.IN_PLACE, numpy_view(buf), op=MPI.SUM)
        buf.div_(self.size)

    def broadcast_(self, buf: torch.Tensor, root: int = 0) -> None:
        """Give every device root's copy of a buffer (initial model); not counted."""
        self.mpi.Bcast(numpy_view(buf), root=root)

    def broadcast_object(self, obj: Any, root: int = 0) -> Any:
        return self.mpi.bcast(obj, root=root)

    def gather_object(self, obj: Any, root: int = 0) -> list[Any] | None:
        return self.mpi.gather(obj, root=root)

    def barrier(self) -> None:
        self.mpi.Barrier()

    def idle_barrier(self, poll_s: float = 1e-3) -> None:
        """A barrier that sleeps while it waits, so idle ranks leave shared cores to the one
        that works (a benchmark's single-device peer); MPI's own wait spins."""
        request = self.mpi.Ibarrier()
        while not request.Test():
            time.sleep(poll_s)

    def _reduce(self, arr: np.ndarray, op: str) -> np.ndarray:
        out = np.empty_like(arr)
        self.mpi.Allreduce(arr, out, op=_OPS[op])
        return out

    def split(self, color: int, key: int | None = None) -> "Comm":
        """A sub-group (e.g. the ranks of one spatial group); its ledger starts at zero."""
        return Comm(self.mpi.Split(color, self.rank if key is None else key))

    def node_size(self) -> int:
        """How many ranks share this node (to divide its cores between them)."""
        local = self.mpi.Split_type(MPI.COMM_TYPE_SHARED)
        try:
            return local.Get_size()
        finally:
            local.Free()

    def abort(self, code: int = 1) -> None:
        """End every rank of the job now: the way a failure on one rank avoids a hang."""
        sys.stdout.flush()
        sys.stderr.flush()
        if self.size > 1:
            self.mpi.Abort(code)


_OPS = {"sum": MPI.SUM, "max": MPI.MAX, "min": MPI.MIN}


def self_comm() -> Comm:
    """A group of one device (the centralized baseline, or a reference run inside a test)."""
    return Comm(MPI.COMM_SELF)


def library_version() -> str:
    return MPI.Get_library_version().splitlines()[0].strip()
