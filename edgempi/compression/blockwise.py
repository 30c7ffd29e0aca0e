"""Decoding every device's payload at once, block by block (qsgd, signsgd).

Decoding one device after another made four passes over the whole vector per device, each in
main memory, plus a fresh vector per device. Here a block of elements of all devices (devices
× ~64K fp32, which stays in a core's L2 cache) is decoded by a few batched tensor operations
and summed over devices straight into the output: main memory sees each payload byte and each
output element once. The per-element arithmetic is the old decoder's, so every device's
decoded value is bitwise the same; only the order of the sum over devices is torch's.
"""
from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable, Iterator

from edgempi.util.lazy import torch
from edgempi.util.scratch import Scratch

from .base import Compressor, Payload

#: fills ``work`` (devices, stop − start) with every device's decoded elements start:stop.
BlockDecoder = Callable[[int, int, "torch.Tensor"], None]


class Blockwise(Compressor):
    """A compressor whose payload parts are as long on every device and decode block by block."""

    uniform = True
    #: elements per block (rounded to :meth:`block_unit`): small enough to stay in L2, large
    #: enough that the few Python calls per block cost little.
    target_block = 1 << 16

    def __init__(self) -> None:
        self.scratch = Scratch()

    def block_unit(self) -> int:
        """Blocks start at multiples of this: whole packed bytes (and, for qsgd, whole buckets)."""
        return 8

    def block_len(self) -> int:
        unit = self.block_unit()
        return unit * max(1, self.target_block // unit)

    def blocks(self, numel: int) -> Iterator[tuple[int, int]]:
        step = self.block_len()
        for start in range(0, numel, step):
            yield start, min(start + step, numel)

    @abstractmethod
    def block_decoder(self, rows: Payload) -> BlockDecoder:
        """The decoder of payloads stacked as rows (one per device); it computes once what
        every block shares (steps, scales)."""

    def mean_rows_(self, out: torch.Tensor, rows: Payload) -> None:
        decode, devices = self.block_decoder(rows), rows[0].shape[0]
        full = self.scratch.get("work", devices * self.block_len())
        for start, stop in self.blocks(out.numel()):
            work = full[:devices * (stop - start)].view(devices, stop - start)
            decode(start, stop, work)
            total = torch.sum(work, 0, out=out[start:stop])
            if devices > 1:
                total.div_(devices)

    def decompress_into(self, payload: Payload, out: torch.Tensor) -> None:
        self.mean_rows_(out, tuple(part.unsqueeze(0) for part in payload))

    def decoded(self, payload: Payload, numel: int) -> Iterator[tuple[int, int, torch.Tensor]]:
        """One payload decoded block by block: (start, stop, its elements start:stop)."""
        decode = self.block_decoder(tuple(part.unsqueeze(0) for part in payload))
        full = self.scratch.get("work", self.block_len())
        for start, stop in self.blocks(numel):
            work = full[:stop - start].view(1, stop - start)
            decode(start, stop, work)
            yield start, stop, work[0]

    def add_to_(self, out: torch.Tensor, payload: Payload, alpha: float = 1.0) -> None:
        for start, stop, values in self.decoded(payload, out.numel()):
            out[start:stop].add_(values, alpha=alpha)

    def residual_into(self, out: torch.Tensor, acc: torch.Tensor, sent: Payload) -> None:
        """acc − sent in one pass (acc − v is acc + (−1)·v to the bit)."""
        for start, stop, values in self.decoded(sent, out.numel()):
            torch.sub(acc[start:stop], values, out=out[start:stop])
