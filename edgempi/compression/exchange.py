"""The exchange a training loop calls: compress, communicate, average, keep the residual.

One :class:`GradientExchange` per use in a run (the gradient of ``large_batch``; the model
update w_device − w_reference of ``fedavg`` with an error feedback of its own). All MPI goes
through :class:`edgempi.comm.Comm`, whose ledger counts the real payload bytes.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from edgempi.registry import COMPRESSORS
from edgempi.settings import require
from edgempi.util.lazy import torch

from .base import CompressionSettings, Compressor
from .memory import ErrorFeedback, MomentumCorrection, NoMemory
from .registry import build, settings_of

if TYPE_CHECKING:
    from ..comm import Comm  # importing comm starts MPI

_SEED_STREAM = 0xC0DEC


class GradientExchange:
    """Leaves in a flat vector the all-device mean of what every device sent.

    Summable payloads (none, fp16, randomk, powersgd) are summed by Allreduce, divided by the
    device count *before* the sum (fp16 cannot overflow); the others (topk, qsgd, signsgd) are
    gathered by Allgather, and every device decodes all payloads at once (``mean_rows_`` or
    ``mean_payloads_``) and takes the mean, so the result is bitwise identical on every device.

    With ``momentum`` > 0, a sparse compressor and error feedback, the exchange applies DGC's
    momentum correction itself (``owns_momentum`` is then True) and the optimizer must run
    plain SGD without momentum. ``dense_downlink``: the server is modelled as replying with
    the dense fp32 mean (4·d bytes down per exchange) rather than relaying compressed payloads.
    """

    def __init__(self, compressor: Compressor, comm: Comm, numel: int, error_feedback: bool = False,
                 momentum: float = 0.0, clip_norm: float = 0.0, dense_downlink: bool = False) -> None:
        self.check_options(clip_norm)
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"the optimizer momentum handed to the exchange must be in [0, 1), got {momentum}")
        self.compressor = compressor
        self.comm = comm
        self.numel = numel
        self.clip_norm = float(clip_norm)
        self.dense_down = 4 * numel if dense_downlink else None
        self.owns_momentum = bool(momentum > 0 and compressor.sparse and error_feedback)
        if self.owns_momentum:
            self.memory: NoMemory | ErrorFeedback | MomentumCorrection = MomentumCorrection(numel, momentum)
        elif error_feedback and not compressor.lossless:
            self.memory = ErrorFeedback(numel)
        else:
            self.memory = NoMemory()

    @staticmethod
    def check_options(clip_norm: float) -> None:
        require(clip_norm >= 0.0, "compression.clip_norm",
                f"must be >= 0 (0 turns local clipping off), got {clip_norm}")

    @classmethod
    def from_config(cls, section: CompressionSettings, comm: Comm,
                    shapes: Sequence[Sequence[int]], seed: int = 0, momentum: float = 0.0,
                    dense_downlink: bool = False) -> GradientExchange:
        """Build from the ``compression`` config section's settings.

        ``shapes``: the shapes of the tensors laid out in the flat vector, in order.
        ``seed``: the run's seed; summable compressors get one shared by all devices (their
        choices must agree), the others one per device.
        """
        settings = settings_of(section)
        stream = np.random.SeedSequence([seed, _SEED_STREAM])
        shared = COMPRESSORS.get(settings.name).summable
        own = stream if shared else stream.spawn(comm.size)[comm.rank]
        compressor = build(settings, shapes, int(own.generate_state(1)[0]))
        return cls(compressor, comm, sum(math.prod(s) for s in shapes), error_feedback=settings.error_feedback,
                   momentum=momentum, clip_norm=settings.clip_norm, dense_downlink=dense_downlink)

    def exchange_mean_(self, flat: torch.Tensor, step: int, epoch: float) -> None:
        """Replace ``flat`` (this device's gradient or update) by the all-device mean of what was sent."""
        if flat.numel() != self.numel or flat.dtype != torch.float32:
            raise ValueError(f"exchange expects a flat fp32 vector of {self.numel} elements, "
                             f"got {flat.numel()} of {flat.dtype}")
        if self.clip_norm:
            # DGC's local clipping: each of N devices to clip/√N, so the sum obeys clip.
            limit = self.clip_norm / math.sqrt(self.comm.size)
            flat.mul_(torch.clamp(limit / (flat.norm() + 1e-12), max=1.0))
        acc = self.memory.accumulate_(flat)
        c, devices = self.compressor, self.comm.size
        if c.collective:
            sent, mean = c.reduce_mean(acc, step, self._allreduce_sum_, devices)
            self.memory.update_(acc, c, sent)
            c.decompress_into(mean, flat)
            return
        payload = c.compress(acc, step, epoch)
        self.memory.update_(acc, c, payload)
        if c.summable:
            (buf,) = payload
            self._allreduce_sum_(buf.div_(devices), True)
            c.decompress_into(payload, flat)
            return
        if c.uniform:
            rows = self.comm.allgather_rows(payload, down_bytes=self.dense_down)
            c.mean_rows_(flat, tuple(torch.from_numpy(r) for r in rows))
        else:
            gathered = self.comm.allgather_parts(payload, down_bytes=self.dense_down)
            c.mean_payloads_(flat, [tuple(torch.from_numpy(p) for p in parts) for parts in gathered])

    def _allreduce_sum_(self, buf: torch.Tensor, first: bool) -> None:
        down = None if self.dense_down is None else (self.dense_down if first else 0)
        self.comm.allreduce_sum_(buf, rounds=int(first), down_bytes=down)
