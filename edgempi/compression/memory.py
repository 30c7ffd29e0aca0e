"""Error-feedback memories, kept apart from the compressors as GRACE keeps them.

A memory turns the fresh vector into the one to compress (``accumulate_``) and, once the
exchange knows what was sent, keeps what was not (``update_``). The invariant every memory
keeps: what was sent + the new residual = the accumulated vector.
"""
from __future__ import annotations

from edgempi.util.lazy import torch

from .base import Compressor, Payload


class NoMemory:
    """Send the fresh vector; whatever compression drops is lost."""

    def accumulate_(self, g: torch.Tensor) -> torch.Tensor:
        return g

    def update_(self, acc: torch.Tensor, compressor: Compressor, sent: Payload) -> None:
        pass


class ErrorFeedback:
    """Residual accumulation (Seide et al. 2014; Karimireddy et al. 2019): e ← (g + e) − sent.

    ``g + e`` is formed in ``g``'s own buffer: the exchange overwrites it with the mean anyway,
    so the memory costs one vector, not two.
    """

    def __init__(self, numel: int) -> None:
        self.residual = torch.zeros(numel, dtype=torch.float32)

    def accumulate_(self, g: torch.Tensor) -> torch.Tensor:
        return g.add_(self.residual)

    def update_(self, acc: torch.Tensor, compressor: Compressor, sent: Payload) -> None:
        compressor.residual_into(self.residual, acc, sent)


class MomentumCorrection:
    """DGC's momentum correction with momentum-factor masking (Lin et al. 2018).

    u ← m·u + g; v ← v + u; v is compressed; where an element was sent, both v and u are
    zeroed. The momentum lives here, so the optimizer must run without its own.
    Needs a sparse compressor (payload with indices).
    """

    def __init__(self, numel: int, momentum: float) -> None:
        self.momentum = momentum
        self.u = torch.zeros(numel, dtype=torch.float32)
        self.v = torch.zeros(numel, dtype=torch.float32)

    def accumulate_(self, g: torch.Tensor) -> torch.Tensor:
        self.u.mul_(self.momentum).add_(g)
        return self.v.add_(self.u)

    def update_(self, acc: torch.Tensor, compressor: Compressor, sent: Payload) -> None:
        compressor.add_to_(self.v, sent, alpha=-1.0)
        self.u.index_fill_(0, compressor.sent_indices(sent).long(), 0.0)
