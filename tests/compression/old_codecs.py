"""The decoders and encoders of qsgd and signsgd as they were before the blockwise rewrite
(one device at a time, whole-vector passes), kept verbatim (apart from the shared bucketing) as
the reference that the tests compare the new path with. Not registered: the tests build them
directly."""
from __future__ import annotations

import math

import numpy as np
import torch

from edgempi.compression.base import Compressor, Payload
from edgempi.compression.compressors import QSGD, TopK
from edgempi.util.scratch import Scratch as _Scratch


class OldTopK(TopK):
    """topk with the old exchange decode: one ``index_add_`` per device, then ÷ devices (the base fallback)."""

    mean_payloads_ = Compressor.mean_payloads_


class OldQSGD(Compressor):
    """Stochastic quantisation (Alistarh et al. 2017), unbiased: per bucket of ``bucket_size``
    elements, |x|/‖bucket‖₂ · levels is rounded up or down at random in proportion to its
    remainder. Payload: each element's signed level (one of 2·levels + 1 codes) packed in as few
    bits as divide a byte (2 bits for levels = 1, 4 for ≤ 7, 8 for ≤ 127), plus one fp32 norm
    per bucket, so fewer levels do cost fewer bytes."""

    def __init__(self, levels: int = 127, bucket_size: int = 512, seed: int = 0) -> None:
        self.levels = int(levels)
        self.bucket_size = int(bucket_size)
        self.bits = 2 if self.levels == 1 else 4 if self.levels <= 7 else 8
        self.gen = torch.Generator().manual_seed(seed)
        self.scratch = _Scratch()

    _buckets = QSGD._buckets  # unchanged by the rewrite: the bucketing is not what is tested

    def _codes(self, numel: int) -> torch.Tensor:
        """A kept uint8 buffer of whole bytes' worth of codes, viewed one packed byte per row."""
        per = 8 // self.bits
        return self.scratch.get("codes", math.ceil(numel / per) * per, torch.uint8).view(-1, per)

    def compress(self, x: torch.Tensor, step: int = 0, epoch: float = 0.0) -> Payload:
        buckets = self._buckets(x)
        norms = torch.linalg.vector_norm(buckets, dim=1)
        scaled = torch.abs(buckets, out=self.scratch.get("scaled", buckets.numel()).view_as(buckets))
        scaled.mul_((self.levels / torch.where(norms > 0, norms, 1.0)).unsqueeze(1))
        noise = torch.rand(buckets.shape, generator=self.gen,
                           out=self.scratch.get("noise", buckets.numel()).view_as(buckets))
        scaled.add_(noise).floor_().clamp_(max=self.levels).copysign_(buckets).add_(self.levels)
        if self.bits == 8:
            return scaled.view(-1)[:x.numel()].to(torch.uint8), norms
        codes = self._codes(x.numel())
        codes.view(-1)[:x.numel()].copy_(scaled.view(-1)[:x.numel()])
        codes.view(-1)[x.numel():].zero_()
        packed = codes[:, 0] << (8 - self.bits)
        for j in range(1, codes.shape[1]):
            packed |= codes[:, j] << (8 - self.bits * (j + 1))
        return packed, norms

    def decompress_into(self, payload: Payload, out: torch.Tensor) -> None:
        packed, norms = payload
        if self.bits == 8:
            out.copy_(packed)
        else:
            codes, mask = self._codes(out.numel()), (1 << self.bits) - 1
            for j in range(codes.shape[1]):
                torch.bitwise_and(packed >> (8 - self.bits * (j + 1)), mask, out=codes[:, j])
            out.copy_(codes.view(-1)[:out.numel()])
        out.sub_(self.levels)
        step = norms / self.levels
        full = out.numel() // self.bucket_size
        out[:full * self.bucket_size].view(full, self.bucket_size).mul_(step[:full].unsqueeze(1))
        out[full * self.bucket_size:].mul_(step[full:])  # the last, shorter bucket (if any)


class OldSignSGD(Compressor):
    """EF-signSGD (Karimireddy et al. 2019): ‖x‖₁/d · sign(x), meant to run with error
    feedback. Payload: the sign bits packed 8 to a byte plus one fp32 scale (zero counts as +)."""

    def __init__(self) -> None:
        self.scratch = _Scratch()

    def compress(self, x: torch.Tensor, step: int = 0, epoch: float = 0.0) -> Payload:
        scale = (torch.linalg.vector_norm(x, ord=1) / x.numel()).reshape(1)
        positive = self.scratch.get("positive", x.numel(), torch.bool).numpy()
        bits = np.packbits(np.greater_equal(x.detach().numpy(), 0, out=positive))
        return torch.from_numpy(bits), scale

    def decompress_into(self, payload: Payload, out: torch.Tensor) -> None:
        bits, scale = payload
        out.copy_(torch.from_numpy(np.unpackbits(bits.numpy(), count=out.numel())))
        out.mul_(2 * scale).sub_(scale)
