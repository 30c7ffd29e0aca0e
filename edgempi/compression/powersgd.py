"""PowerSGD (Vogels et al. 2019): a rank-r approximation of every matrix-shaped tensor.

Each parameter of shape (n, ...) is read as an n × m matrix M. One power-iteration step with
a warm-started Q gives P = M Q (Allreduce, then orthonormalised) and Q = Mᵀ P (Allreduce),
and M ≈ P Qᵀ. Both sums are linear, so the whole exchange is two Allreduces of the factors.
Vectors (biases, BatchNorm) travel uncompressed in the first Allreduce. Every matrix is
factorised, with rank min(r, n, m): at full rank the result is the exact mean.

The work is one matrix product per matrix, on zero-copy views of the flat vector. Batching
the matrices of equal shape would need a gather of the whole vector, which measured 140 ms
at ResNet-18 size, more than all the products together.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from edgempi.registry import COMPRESSORS
from edgempi.settings import require
from edgempi.util.lazy import torch

from .base import AllreduceSum, CompressionSettings, Compressor, Payload


@dataclass(frozen=True)
class _Matrix:
    """A parameter seen as an n × m matrix, from ``start`` in the flat vector."""

    start: int
    n: int
    m: int
    rank: int

    def of(self, flat: torch.Tensor) -> torch.Tensor:
        return flat[self.start:self.start + self.n * self.m].view(self.n, self.m)


def _noop_allreduce(buf: torch.Tensor, first: bool) -> None:
    """One device: the sum over devices is the device's own value."""


@dataclass
class PowerSGDSettings(CompressionSettings):
    rank: int = 4
    """The rank r of the approximation of every matrix-shaped tensor."""

    def check(self, cfg: object = None) -> None:
        super().check()
        require(self.rank >= 1, "compression.rank", f"must be a whole number >= 1, got {self.rank}")


@COMPRESSORS.register("powersgd")
class PowerSGD(Compressor):
    """Rank-``rank`` PowerSGD over the model ``shapes`` (the flat layout, in order).

    Payload: (P factors, Q factors, uncompressed vectors), 4·(Σ r(n + m) + vector elements) bytes.
    """
    paper = ("Vogels et al., PowerSGD: Practical Low-Rank Gradient Compression for Distributed Optimization, "
             "NeurIPS 2019, arXiv:1905.13727")

    summable = True
    collective = True

    Settings = PowerSGDSettings

    @classmethod
    def from_settings(cls, settings: PowerSGDSettings, shapes: Sequence[Sequence[int]], seed: int,
                      unbiased: bool) -> PowerSGD:
        return cls(settings.rank, shapes=shapes, seed=seed)

    def __init__(self, rank: int = 4, shapes: Sequence[Sequence[int]] | None = None, seed: int = 0) -> None:
        require(bool(shapes), "compression.name", "powersgd needs the model layout: pass shapes=[parameter shapes]")
        self.rank = int(rank)
        self.matrices: list[_Matrix] = []
        plain, start = [], 0
        for shape in shapes or ():  # not empty: required above
            numel = math.prod(shape)
            if len(shape) >= 2 and numel > 0:
                n, m = shape[0], numel // shape[0]
                self.matrices.append(_Matrix(start, n, m, min(self.rank, n, m)))
            else:
                plain.append(torch.arange(start, start + numel))
            start += numel
        self.numel = start
        self.plain = torch.cat(plain) if plain else torch.zeros(0, dtype=torch.int64)
        self.p_numel = sum(mt.n * mt.rank for mt in self.matrices)
        gen = torch.Generator().manual_seed(seed)
        self.q = torch.randn(sum(mt.m * mt.rank for mt in self.matrices), generator=gen)

    def _factors(self, buf: torch.Tensor, rows: str) -> list[torch.Tensor]:
        """Views of the per-matrix factors packed in ``buf`` (``rows`` "n" for P, "m" for Q)."""
        sizes = [getattr(mt, rows) * mt.rank for mt in self.matrices]
        parts = buf[:sum(sizes)].split(sizes)
        return [p.view(-1, mt.rank) for p, mt in zip(parts, self.matrices)]

    def reduce_mean(self, x: torch.Tensor, step: int, allreduce_sum_: AllreduceSum,
                    devices: int) -> tuple[Payload, Payload]:
        if x.numel() != self.numel:
            raise ValueError(f"powersgd: the layout holds {self.numel} elements, the vector {x.numel()}")
        p_buf = torch.empty(self.p_numel + self.plain.numel())
        for mt, q, p in zip(self.matrices, self._factors(self.q, "m"), self._factors(p_buf, "n")):
            torch.mm(mt.of(x), q, out=p)
        plain = x.index_select(0, self.plain)
        p_buf[self.p_numel:] = plain
        allreduce_sum_(p_buf, True)
        p_buf.div_(devices)
        q_buf = torch.empty_like(self.q)
        for mt, p, q in zip(self.matrices, self._factors(p_buf, "n"), self._factors(q_buf, "m")):
            p.copy_(torch.linalg.qr(p).Q)
            torch.mm(mt.of(x).T, p, out=q)
        allreduce_sum_(q_buf, False)
        self.q = q_buf.div_(devices)
        p_hat = p_buf[:self.p_numel]
        return (p_hat, q_buf, plain), (p_hat, q_buf, p_buf[self.p_numel:])

    def compress(self, x: torch.Tensor, step: int = 0, epoch: float = 0.0) -> Payload:
        """The single-device view: the approximation of this device's own vector."""
        return self.reduce_mean(x, step, _noop_allreduce, 1)[1]

    def decompress_into(self, payload: Payload, out: torch.Tensor) -> None:
        p_hat, q_buf, plain = payload
        for mt, p, q in zip(self.matrices, self._factors(p_hat, "n"), self._factors(q_buf, "m")):
            torch.mm(p, q.T, out=mt.of(out))
        out.index_copy_(0, self.plain, plain)
