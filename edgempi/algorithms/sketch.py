"""The AMS sketch of a flat vector, as SketchFDA sends it every step.

A sketch row hashes each coordinate into one of ``width`` buckets with a random sign and sums
per bucket; the sum of squares of a row is an unbiased estimate of ‖v‖², and the median over
``depth`` rows makes it reliable. The sketch is linear in v, so the Allreduce-mean of the
devices' sketches is the sketch of their mean update: the one thing FDA needs from it.

The hash and sign functions are drawn once from a seeded generator (fully random, so stronger
than the 2-wise buckets / 4-wise signs the AMS bound needs) and are identical on every rank.
Error bound used by the tests: each row has variance ≤ 2‖v‖⁴/width, so by Chebyshev a row misses
‖v‖² by more than 4ε‖v‖² (ε = 1/√width) with probability ≤ 1/8, and the median of 5 rows misses
only if 3 rows do: probability ≤ 0.017.
"""
from __future__ import annotations

import math

import numpy as np

from edgempi.util.lazy import torch


class AmsSketch:
    """Sketches of vectors of length ``dim`` into a ``depth × width`` table."""

    def __init__(self, dim: int, depth: int, width: int, seed: int) -> None:
        gen = torch.Generator().manual_seed(seed)
        self.depth, self.width = depth, width
        rows = torch.arange(depth, dtype=torch.int64).unsqueeze(1) * width
        # Bucket of coordinate i in row j, offset into the flattened table: one index_add_ per sketch.
        self.index = (torch.randint(width, (depth, dim), generator=gen) + rows).reshape(-1)
        self.signs = torch.randint(2, (depth, dim), generator=gen).to(torch.float32).mul_(2).sub_(1)
        self._signed = torch.empty(depth, dim, dtype=torch.float32)

    @property
    def size(self) -> int:
        return self.depth * self.width

    @property
    def epsilon(self) -> float:
        """The accuracy FDA assumes for ‖v‖² from this sketch: 1/√width."""
        return 1.0 / math.sqrt(self.width)

    def sketch_(self, v: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """Write the sketch of ``v`` into the flat ``out`` (length depth·width)."""
        torch.mul(self.signs, v, out=self._signed)
        return out.zero_().index_add_(0, self.index, self._signed.view(-1))

    def sq_norm(self, table: np.ndarray | torch.Tensor) -> float:
        """‖v‖² estimated from a (flat) sketch of v: the median over rows of the row's sum of squares."""
        rows = np.asarray(table, dtype=np.float64).reshape(self.depth, self.width)
        return float(np.median(np.square(rows).sum(axis=1)))
