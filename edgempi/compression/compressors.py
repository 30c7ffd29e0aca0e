"""The element-wise compressors: none, fp16, topk (DGC), randomk, qsgd, signsgd.

Hot paths work on whole flat vectors; the selection of ``topk`` runs in numpy because its
``abs``/``>=``/``flatnonzero`` are several times faster than torch's on one CPU core.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from edgempi.registry import COMPRESSORS
from edgempi.settings import require
from edgempi.util.lazy import torch
from edgempi.util.scratch import Scratch

from .base import CompressionSettings, Compressor, Payload, RatioSettings
from .blockwise import BlockDecoder, Blockwise


def _step_seed(seed: int, step: int) -> int:
    """A seed for one step that every device derives alike (no communication needed)."""
    return int(np.random.SeedSequence([seed, step]).generate_state(1)[0])


def _kept(density: float, numel: int) -> int:
    return min(numel, max(1, round(density * numel)))


@COMPRESSORS.register("none")
class NoCompression(Compressor):
    """The dense fp32 vector itself: the baseline every other scheme is measured against."""

    summable = True
    lossless = True

    def compress(self, x: torch.Tensor, step: int = 0, epoch: float = 0.0) -> Payload:
        return (x,)

    def decompress_into(self, payload: Payload, out: torch.Tensor) -> None:
        if payload[0].data_ptr() != out.data_ptr():
            out.copy_(payload[0])


@COMPRESSORS.register("fp16")
class FP16(Compressor):
    """Half precision: 2 bytes per element. The exchange divides by the device count before
    summing, so the fp16 sum cannot overflow where the fp32 mean would not."""

    summable = True

    def __init__(self) -> None:
        self.scratch = Scratch()

    def compress(self, x: torch.Tensor, step: int = 0, epoch: float = 0.0) -> Payload:
        """Into a buffer of the compressor: the payload is valid until the next call."""
        return (self.scratch.get("half", x.numel(), torch.float16).copy_(x),)

    def decompress_into(self, payload: Payload, out: torch.Tensor) -> None:
        out.copy_(payload[0])


@dataclass
class TopKSettings(RatioSettings):
    warmup_epochs: int = 0
    """DGC's warm-up: epochs over which the kept fraction falls geometrically to ``ratio`` (0: off)."""
    sample_ratio: float = 0.01
    """The fraction of magnitudes sampled to set the threshold."""

    def check(self, cfg: object = None) -> None:
        super().check()
        require(self.warmup_epochs >= 0, "compression.warmup_epochs",
                f"must be a whole number of epochs >= 0 (0 turns warm-up off), got {self.warmup_epochs}")
        require(0.0 < self.sample_ratio <= 1.0, "compression.sample_ratio",
                f"must be in (0, 1], got {self.sample_ratio}")


@COMPRESSORS.register("topk")
class TopK(Compressor):
    """Top-k sparsification as in Deep Gradient Compression (Lin et al. 2018).

    The threshold comes from a random sample (~1%) of the magnitudes, set so that about
    ``oversample``·k elements pass; the exact top-k of those few candidates is then kept.
    This equals the exact top-k whenever at least k pass, at a fraction of a full selection's
    cost. During warm-up the density falls geometrically from 1 to ``ratio`` over
    ``warmup_epochs`` epochs: ratio^((e+1)/(W+1)) in epoch e, i.e. 25% → 6.25% → 1.56% → 0.4%
    → 0.1% for ratio 0.001 and four warm-up epochs, the schedule of the paper.
    Payload: fp32 values and int32 indices, 8 bytes per kept element.
    """
    paper = "Lin et al., Deep Gradient Compression, ICLR 2018, arXiv:1712.01887"

    sparse = True
    #: the sample must hold this many elements above the threshold for it to be reliable.
    min_sample_hits = 64
    oversample = 1.25

    Settings = TopKSettings

    def __init__(self, ratio: float = 0.01, warmup_epochs: int = 0, sample_ratio: float = 0.01,
                 seed: int = 0) -> None:
        self.ratio = float(ratio)
        self.warmup_epochs = int(warmup_epochs)
        self.sample_ratio = float(sample_ratio)
        self.rng = np.random.default_rng(seed)
        self.scratch = Scratch()

    @classmethod
    def from_settings(cls, settings: TopKSettings, shapes: Sequence[Sequence[int]], seed: int,
                      unbiased: bool) -> TopK:
        return cls(settings.ratio, settings.warmup_epochs, settings.sample_ratio, seed=seed)

    def density(self, epoch: float) -> float:
        e = max(0, math.floor(epoch))
        if e >= self.warmup_epochs:
            return self.ratio
        return self.ratio ** ((e + 1) / (self.warmup_epochs + 1))

    def compress(self, x: torch.Tensor, step: int = 0, epoch: float = 0.0) -> Payload:
        numel = x.numel()
        require(numel < 2**31, "compression.name", "topk indices are int32: vectors must hold < 2^31 elements")
        k = _kept(self.density(epoch), numel)
        if k == numel:
            return x.clone(), torch.arange(numel, dtype=torch.int32)
        idx = self.select(x.detach().numpy(), k)
        return x[torch.from_numpy(idx)], torch.from_numpy(idx.astype(np.int32))

    def select(self, xn: np.ndarray, k: int) -> np.ndarray:
        """Sorted indices of (about, never more than) the k largest magnitudes."""
        numel = xn.size
        mag = np.abs(xn, out=self.scratch.get("mag", numel).numpy())
        samples = max(math.ceil(self.sample_ratio * numel), math.ceil(self.min_sample_hits * numel / k))
        hits = math.ceil(self.oversample * k * samples / numel)
        if hits >= samples or samples >= numel // 2:  # small vector: the exact selection is cheap
            return np.sort(np.argpartition(mag, numel - k)[numel - k:])
        sample = mag[self.rng.integers(0, numel, samples)]
        threshold = np.partition(sample, samples - hits)[samples - hits]
        passed = np.greater_equal(mag, threshold, out=self.scratch.get("mask", numel, torch.bool).numpy())
        idx = np.flatnonzero(passed)
        if idx.size > k:  # re-threshold: the exact top-k of the few candidates
            idx = np.sort(idx[np.argpartition(mag[idx], idx.size - k)[idx.size - k:]])
        return idx

    def decompress_into(self, payload: Payload, out: torch.Tensor) -> None:
        self.add_to_(out.zero_(), payload)

    def add_to_(self, out: torch.Tensor, payload: Payload, alpha: float = 1.0) -> None:
        values, idx = payload
        out.index_add_(0, idx, values, alpha=alpha)

    def mean_payloads_(self, out: torch.Tensor, payloads: Sequence[Payload]) -> None:
        """One ``index_add_`` of all devices' elements, in rank order as one at a time added them."""
        values = torch.cat([p[0] for p in payloads])
        out.zero_().index_add_(0, torch.cat([p[1] for p in payloads]), values).div_(len(payloads))


@COMPRESSORS.register("randomk")
class RandomK(Compressor):
    """k random elements, the same on every device (the indices come from a seed shared per
    step), so only the values travel and they can be summed by Allreduce: 4 bytes per element.

    Indices are k uniform draws with duplicates removed, so every element is kept with the same
    probability p = 1 − (1 − 1/d)^k. With ``unbiased`` the values are scaled by 1/p, an unbiased
    estimate of the vector; with error feedback they are sent as they are, because the scaled
    estimate is not a contraction and would make the residual grow (Stich et al. 2018).
    """
    paper = "Stich et al., Sparsified SGD with Memory, NeurIPS 2018, arXiv:1809.07599"

    summable = True
    Settings = RatioSettings

    def __init__(self, ratio: float = 0.01, unbiased: bool = True, seed: int = 0) -> None:
        self.ratio = float(ratio)
        self.unbiased = bool(unbiased)
        self.seed = seed
        self._last: tuple[int, int, torch.Tensor] | None = None

    @classmethod
    def from_settings(cls, settings: RatioSettings, shapes: Sequence[Sequence[int]], seed: int,
                      unbiased: bool) -> RandomK:
        return cls(settings.ratio, unbiased=unbiased, seed=seed)

    def chosen(self, numel: int, step: int) -> torch.Tensor:
        if self._last is None or self._last[:2] != (numel, step):
            gen = torch.Generator().manual_seed(_step_seed(self.seed, step))
            draws = torch.randint(0, numel, (_kept(self.ratio, numel),), generator=gen)
            self._last = (numel, step, torch.unique(draws))
        return self._last[2]

    def scale(self, numel: int) -> float:
        k = _kept(self.ratio, numel)
        return 1.0 / -math.expm1(k * math.log1p(-1.0 / numel)) if self.unbiased and numel > 1 else 1.0

    def compress(self, x: torch.Tensor, step: int = 0, epoch: float = 0.0) -> Payload:
        values = x[self.chosen(x.numel(), step)]
        return (values.mul_(self.scale(x.numel())),)

    def decompress_into(self, payload: Payload, out: torch.Tensor) -> None:
        self.add_to_(out.zero_(), payload)

    def add_to_(self, out: torch.Tensor, payload: Payload, alpha: float = 1.0) -> None:
        """Uses the indices of the latest :meth:`compress` (the exchange decompresses in the same step)."""
        if self._last is None or self._last[0] != out.numel():
            raise RuntimeError("randomk decompresses the payload of its latest compress() only")
        out.index_add_(0, self._last[2], payload[0], alpha=alpha)


@dataclass
class QSGDSettings(CompressionSettings):
    levels: int = 127
    """Quantisation levels per sign: 1 packs an element in 2 bits, up to 7 in 4, up to 127 in 8."""
    bucket_size: int = 512
    """Elements per bucket, which shares one fp32 norm."""

    def check(self, cfg: object = None) -> None:
        super().check()
        require(1 <= self.levels <= 127, "compression.levels",
                f"must be a whole number in [1, 127] (a level fits in one byte), got {self.levels}")
        require(self.bucket_size >= 1, "compression.bucket_size",
                f"must be a whole number >= 1, got {self.bucket_size}")


@COMPRESSORS.register("qsgd")
class QSGD(Blockwise):
    """Stochastic quantisation (Alistarh et al. 2017), unbiased: per bucket of ``bucket_size``
    elements, |x|/‖bucket‖₂ · levels is rounded up or down at random in proportion to its
    remainder. Payload: each element's signed level (one of 2·levels + 1 codes) packed in as few
    bits as divide a byte (2 bits for levels = 1, 4 for ≤ 7, 8 for ≤ 127), plus one fp32 norm
    per bucket, so fewer levels do cost fewer bytes. The codes live in a buffer of the
    compressor: a payload is valid until the next :meth:`compress`.

    Both ways work block by block (whole buckets, whole bytes) so that the dozen element-wise
    steps run in cache; the uniform draws come from one generator in element order, the same
    stream as one draw of the whole vector.
    """
    paper = ("Alistarh et al., QSGD: Communication-Efficient SGD via Gradient Quantization and Encoding, "
             "NeurIPS 2017, arXiv:1610.02132")

    Settings = QSGDSettings

    @classmethod
    def from_settings(cls, settings: QSGDSettings, shapes: Sequence[Sequence[int]], seed: int,
                      unbiased: bool) -> QSGD:
        return cls(settings.levels, settings.bucket_size, seed=seed)

    def __init__(self, levels: int = 127, bucket_size: int = 512, seed: int = 0) -> None:
        super().__init__()
        self.levels = int(levels)
        self.bucket_size = int(bucket_size)
        self.bits = 2 if self.levels == 1 else 4 if self.levels <= 7 else 8
        self.per_byte = 8 // self.bits
        #: the shift that puts code j of a byte in place (first code in the high bits).
        self.shifts = torch.tensor([8 - self.bits * (j + 1) for j in range(self.per_byte)], dtype=torch.uint8)
        self.gen = torch.Generator().manual_seed(seed)

    def block_unit(self) -> int:
        return math.lcm(self.bucket_size, self.per_byte)

    def compress(self, x: torch.Tensor, step: int = 0, epoch: float = 0.0) -> Payload:
        numel, bs = x.numel(), self.bucket_size
        norms = torch.empty(math.ceil(numel / bs))
        packed = self.scratch.get("packed", math.ceil(numel / self.per_byte), torch.uint8)
        for start, stop in self.blocks(numel):
            buckets = self._buckets(x[start:stop])
            levels = self._levels(buckets, norms[start // bs:start // bs + buckets.shape[0]])
            self._pack(levels.view(-1)[:stop - start], packed[start // self.per_byte:-(-stop // self.per_byte)])
        return packed, norms

    def _buckets(self, x: torch.Tensor) -> torch.Tensor:
        """A block as rows of one bucket each, the last zero-padded (in a kept buffer) if short."""
        padded = math.ceil(x.numel() / self.bucket_size) * self.bucket_size
        if padded != x.numel():
            buf = self.scratch.get("padded", padded)
            buf[:x.numel()].copy_(x)
            buf[x.numel():].zero_()
            x = buf
        return x.view(-1, self.bucket_size)

    def _levels(self, buckets: torch.Tensor, norms: torch.Tensor) -> torch.Tensor:
        """Each bucket's norm into ``norms``; returns the codes (signed level + levels) as floats."""
        torch.linalg.vector_norm(buckets, dim=1, out=norms)
        scaled = torch.abs(buckets, out=self.scratch.get("scaled", self.block_len())[:buckets.numel()].view_as(buckets))
        scaled.mul_((self.levels / torch.where(norms > 0, norms, 1.0)).unsqueeze(1))
        noise = torch.rand(buckets.shape, generator=self.gen,
                           out=self.scratch.get("noise", self.block_len())[:buckets.numel()].view_as(buckets))
        return scaled.add_(noise).floor_().clamp_(max=self.levels).copysign_(buckets).add_(self.levels)

    def _pack(self, codes: torch.Tensor, packed: torch.Tensor) -> None:
        """Codes (floats holding small whole numbers) into ``packed``, ``per_byte`` to a byte."""
        if self.per_byte == 1:
            packed.copy_(codes)
            return
        lanes = self.scratch.get("lanes", packed.numel() * self.per_byte, torch.uint8)
        lanes[:codes.numel()].copy_(codes)
        lanes[codes.numel():].zero_()
        lanes = lanes.view(-1, self.per_byte)
        torch.bitwise_left_shift(lanes[:, 0], int(self.shifts[0]), out=packed)
        for j in range(1, self.per_byte):
            packed |= lanes[:, j] << int(self.shifts[j])

    def block_decoder(self, rows: Payload) -> BlockDecoder:
        packed, norms = rows
        devices, bs, per = packed.shape[0], self.bucket_size, self.per_byte
        steps = norms / self.levels
        lanes = self.scratch.get("unpacked", devices * self.block_len(), torch.uint8)

        def decode(start: int, stop: int, work: torch.Tensor) -> None:
            if per == 1:
                work.copy_(packed[:, start:stop])
            else:
                first, end = start // per, -(-stop // per)
                split = lanes[:devices * (end - first) * per].view(devices, end - first, per)
                torch.bitwise_right_shift(packed[:, first:end, None], self.shifts, out=split)
                work.copy_(split.bitwise_and_((1 << self.bits) - 1).view(devices, -1)[:, :stop - start])
            work.sub_(self.levels)
            full, first_bucket = (stop - start) // bs, start // bs
            work[:, :full * bs].view(devices, full, bs).mul_(steps[:, first_bucket:first_bucket + full, None])
            if full * bs < stop - start:  # the last, shorter bucket
                work[:, full * bs:].mul_(steps[:, first_bucket + full:first_bucket + full + 1])
        return decode


@COMPRESSORS.register("signsgd")
class SignSGD(Blockwise):
    """EF-signSGD (Karimireddy et al. 2019): ‖x‖₁/d · sign(x), meant to run with error
    feedback. Payload: the sign bits packed 8 to a byte plus one fp32 scale (zero counts as +)."""
    paper = ("Karimireddy et al., Error Feedback Fixes SignSGD and other Gradient Compression Schemes, "
             "ICML 2019, arXiv:1901.09847")

    def compress(self, x: torch.Tensor, step: int = 0, epoch: float = 0.0) -> Payload:
        scale = (torch.linalg.vector_norm(x, ord=1) / x.numel()).reshape(1)
        positive = self.scratch.get("positive", x.numel(), torch.bool).numpy()
        bits = np.packbits(np.greater_equal(x.detach().numpy(), 0, out=positive))
        return torch.from_numpy(bits), scale

    def block_decoder(self, rows: Payload) -> BlockDecoder:
        bits, scale = rows[0].numpy(), rows[1]
        double = 2 * scale

        def decode(start: int, stop: int, work: torch.Tensor) -> None:
            positive = np.unpackbits(bits[:, start // 8:-(-stop // 8)], axis=1, count=stop - start)
            work.copy_(torch.from_numpy(positive)).mul_(double).sub_(scale)  # the old decoder's steps
        return decode
