"""Work buffers kept between steps.

A fresh 45 MB tensor per step costs more in page faults than the arithmetic done in it (ResNet-18's
11.2M-element gradient): the compressors and the comm layer's own reductions keep theirs.
"""
from __future__ import annotations

from edgempi.util.lazy import torch


class Scratch:
    """Reused work buffers, one per name, length and dtype."""

    def __init__(self) -> None:
        self._bufs: dict[tuple[str, int, torch.dtype], torch.Tensor] = {}

    def get(self, name: str, numel: int, dtype: torch.dtype | None = None) -> torch.Tensor:
        """The kept buffer of ``numel`` elements (float32 unless said otherwise); its contents are
        whatever the last user left."""
        key = (name, numel, dtype or torch.float32)
        buf = self._bufs.get(key)
        if buf is None:
            buf = self._bufs[key] = torch.empty(numel, dtype=key[2])
        return buf
