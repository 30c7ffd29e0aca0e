"""The gradient Allreduce of ``large_batch`` overlapped with backward, in buckets (as DDP does).

Backward produces the gradients of the last layers first. The flat gradient buffer is cut
into contiguous buckets of about ``algorithm.bucket_mb`` from its end; a post-accumulate-grad
hook on every parameter counts down its bucket, and a bucket whose gradients are all in starts
its non-blocking Allreduce at once (buckets start in one fixed order on every rank, as MPI
requires). The first layers' bucket, the last to be ready, is the only wire time left after
backward. The result is the single Allreduce's, bit for bit (:class:`edgempi.comm.SegmentedMean`).
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from edgempi.comm import Comm
    from edgempi.flat import FlatModel


def bucket_bounds(sizes: list[int], cap: int) -> tuple[list[tuple[int, int]], np.ndarray]:
    """Cut a buffer holding tensors of ``sizes`` elements (in order) into buckets of whole
    tensors, about ``cap`` elements each, counted from the buffer's end. Returns every bucket's
    ``(lo, hi)`` in the order backward fills them (bucket 0 ends the buffer) and each tensor's
    bucket."""
    ends = np.cumsum(sizes)
    # A tensor joins the bucket its end falls in, counted back from the buffer's end; one
    # larger than ``cap`` spans several such bands and gets a bucket of its own.
    _, bucket_of = np.unique((ends[-1] - ends) // max(1, cap), return_inverse=True)
    starts = ends - np.asarray(sizes)
    bounds = [(int(starts[bucket_of == b].min()), int(ends[bucket_of == b].max()))
              for b in range(int(bucket_of.max()) + 1)]
    return bounds, bucket_of


class GradientBuckets:
    """Averages ``flat.grads`` over all devices in buckets started during backward.

    Call :meth:`finish` after every backward: it starts any bucket still waiting (parameters
    that got no gradient this step), waits, and leaves the all-device mean in ``flat.grads``.
    One Python hook call per parameter and backward: the count-down of its bucket.
    """

    def __init__(self, flat: FlatModel, comm: Comm, bucket_mb: float) -> None:
        from edgempi.comm import SegmentedMean  # not at import: importing comm starts MPI

        self.flat = flat
        self.mean = SegmentedMean(comm, flat.grads)
        sizes = [math.prod(shape) for shape in flat.shapes]
        cap = int(bucket_mb * 2**20) // flat.grads.element_size()
        self.bounds, bucket_of = bucket_bounds(sizes, cap)
        self.params_in = np.bincount(bucket_of)
        self.waiting = self.params_in.copy()  # per bucket: parameters whose gradient is not in yet
        self.started = 0  # buckets 0 … started − 1 are on their way
        params = [p for p in flat.model.parameters() if p.requires_grad]
        for p, bucket in zip(params, bucket_of.tolist()):
            p.register_post_accumulate_grad_hook(lambda _, b=bucket: self._ready(b))

    def _ready(self, bucket: int) -> None:
        if bucket < self.started:
            raise RuntimeError("a second backward before the gradient exchange of the first finished")
        self.waiting[bucket] -= 1
        while self.started < len(self.bounds) and self.waiting[self.started] == 0:
            self.mean.start(*self.bounds[self.started])
            self.started += 1
        self.mean.progress()

    def finish(self) -> int:
        """Complete the exchange of this backward's gradient; returns how many devices reported."""
        for bucket in range(self.started, len(self.bounds)):
            self.mean.start(*self.bounds[bucket])
        self.started = 0
        self.waiting[:] = self.params_in
        return self.mean.finish()

