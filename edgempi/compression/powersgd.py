"""PowerSGD (Vogels et al. 2019): a rank-r approximation of every matrix-shaped tensor.

Each parameter of shape (n, ...) is read as an n × m matrix M. One power-iteration step with
a warm-started Q gives P = M Q (Allreduce, then orthonormalised) and Q = Mᵀ P (Allreduce),
and M ≈ P Qᵀ. Both sums are linear, so the whole exchange is two Allreduces of the factors.
Vectors (biases, BatchNorm) travel uncompressed in the first Allreduce. Every matrix is
factorised, with rank min(r, n, m), even where that saves nothing: at full rank the result is
the exact mean, which the tests use as the check of the whole path.

Matrices of the same shape are batched (one bmm and one batched QR per distinct shape), so
the work per exchange is a loop over distinct shapes, not over parameters.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch

from .base import AllreduceSum, Compressor, Payload
from .compressors import _require


@dataclass(frozen=True)
class _Group:
    """``count`` matrices of shape n × m, stored one after the other in the permuted vector."""

    count: int
    n: int
    m: int
    rank: int

    @property
    def numel(self) -> int:
        return self.count * self.n * self.m


def _cat(parts: list[torch.Tensor]) -> torch.Tensor:
    """torch.cat that also takes an empty list (a layout without matrices)."""
    return torch.cat(parts) if parts else torch.zeros(0)


def _noop_allreduce(buf: torch.Tensor, first: bool) -> None:
    """One device: the sum over devices is the device's own value."""


class PowerSGD(Compressor):
    """Rank-``rank`` PowerSGD over the model ``shapes`` (the flat layout, in order)."""

    summable = True
    collective = True

    def __init__(self, rank: int = 4, shapes: Sequence[Sequence[int]] | None = None, seed: int = 0) -> None:
        _require(rank >= 1 and float(rank).is_integer(), "rank", f"must be a whole number >= 1, got {rank}")
        _require(bool(shapes), "name", "powersgd needs the model layout: pass shapes=[parameter shapes]")
        self.rank = int(rank)
        starts, by_shape, plain = 0, {}, []
        for shape in shapes:
            numel = math.prod(shape)
            n = shape[0] if len(shape) >= 2 else numel
            m = numel // n if numel else 0
            r = min(self.rank, n, m)
            span = torch.arange(starts, starts + numel)
            if len(shape) >= 2 and r > 0:
                by_shape.setdefault((n, m, r), []).append(span)
            else:
                plain.append(span)
            starts += numel
        self.numel = starts
        self.groups = [_Group(len(spans), n, m, r) for (n, m, r), spans in by_shape.items()]
        order = [s for spans in by_shape.values() for s in spans] + plain
        # perm[i] is the flat position of element i of the permuted vector, in which the
        # matrices of each group are contiguous and can be viewed as one (count, n, m) batch.
        self.perm = torch.cat(order) if order else torch.zeros(0, dtype=torch.int64)
        self.plain_numel = sum(s.numel() for s in plain)
        gen = torch.Generator().manual_seed(seed)
        self.q = [torch.randn(g.count, g.m, g.rank, generator=gen) for g in self.groups]

    def _matrices(self, y: torch.Tensor) -> list[torch.Tensor]:
        sizes = [g.numel for g in self.groups]
        parts = y[:sum(sizes)].split(sizes)
        return [p.view(g.count, g.n, g.m) for p, g in zip(parts, self.groups)]

    def _split(self, buf: torch.Tensor, rows: str) -> list[torch.Tensor]:
        """The per-group factors (``rows`` "n" for P, "m" for Q) packed in one flat buffer."""
        sizes = [g.count * getattr(g, rows) * g.rank for g in self.groups]
        parts = buf[:sum(sizes)].split(sizes)
        return [p.view(g.count, getattr(g, rows), g.rank) for p, g in zip(parts, self.groups)]

    def reduce_mean(self, x: torch.Tensor, step: int, allreduce_sum_: AllreduceSum,
                    devices: int) -> tuple[Payload, Payload]:
        if x.numel() != self.numel:
            raise ValueError(f"powersgd: the layout holds {self.numel} elements, the vector {x.numel()}")
        y = x.index_select(0, self.perm)
        mats = self._matrices(y)
        plain = y[y.numel() - self.plain_numel:]
        p_buf = _cat([torch.bmm(m, q).view(-1) for m, q in zip(mats, self.q)] + [plain])
        allreduce_sum_(p_buf, True)
        p_buf.div_(devices)
        p_hat = [torch.linalg.qr(p).Q for p in self._split(p_buf, "n")]
        q_buf = _cat([torch.bmm(m.transpose(1, 2), p).view(-1) for m, p in zip(mats, p_hat)])
        allreduce_sum_(q_buf, False)
        q_buf.div_(devices)
        self.q = self._split(q_buf, "m")
        p_flat = _cat([p.reshape(-1) for p in p_hat])
        mean_plain = p_buf[p_buf.numel() - self.plain_numel:]
        return (p_flat, q_buf, plain), (p_flat, q_buf, mean_plain)

    def compress(self, x: torch.Tensor, step: int = 0, epoch: float = 0.0) -> Payload:
        """The single-device view: the approximation of this device's own vector."""
        return self.reduce_mean(x, step, _noop_allreduce, 1)[1]

    def decompress(self, payload: Payload, numel: int) -> torch.Tensor:
        p_flat, q_buf, plain = payload
        y = _cat([torch.bmm(p, q.transpose(1, 2)).view(-1)
                       for p, q in zip(self._split(p_flat, "n"), self._split(q_buf, "m"))] + [plain])
        return torch.empty(numel, dtype=torch.float32).index_copy_(0, self.perm, y)
