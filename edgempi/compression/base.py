"""The compressor interface shared by every scheme, in the three-piece split of GRACE.

A compressor turns a flat fp32 vector into a payload (a tuple of tensors: values, indices,
norms, packed bits, factors) and back. It never talks to MPI and never keeps error-feedback
state: the memory (:mod:`.memory`) and the exchange (:mod:`.exchange`) are separate pieces.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from edgempi.settings import Settings, require
from edgempi.util.lazy import torch

if TYPE_CHECKING:
    from edgempi.config import RunConfig

Payload = tuple["torch.Tensor", ...]
#: ``allreduce_sum_(buf, first)``: sum ``buf`` over devices in place; ``first`` is False for
#: the later collectives of one exchange, so the ledger counts one round per exchange.
AllreduceSum = Callable[["torch.Tensor", bool], None]


def payload_bytes(payload: Sequence[torch.Tensor]) -> int:
    """What the payload costs on the wire: the bytes of its tensors, nothing else."""
    return sum(t.numel() * t.element_size() for t in payload)


@dataclass
class CompressionSettings(Settings):
    """The ``compression`` section as every compressor reads it; a compressor derives its own
    keys. ``error_feedback`` and ``clip_norm`` belong to the exchange around it."""

    error_feedback: bool = True
    """Add what compression left out of one exchange to the next one's vector (error feedback)."""
    clip_norm: float = 0.0
    """Clip each device's gradient to this norm before compressing it, as DGC does (0: off)."""

    @classmethod
    def section(cls) -> str:
        return "compression"

    def check(self, cfg: RunConfig | None = None) -> None:
        """The section's own values; which methods compress is the method's rule."""
        require(self.clip_norm >= 0.0, "compression.clip_norm",
                f"must be >= 0 (0 turns local clipping off), got {self.clip_norm}")


@dataclass
class RatioSettings(CompressionSettings):
    ratio: float = 0.01
    """The fraction of elements kept."""

    def check(self, cfg: RunConfig | None = None) -> None:
        super().check(cfg)
        require(0.0 < self.ratio <= 1.0, "compression.ratio",
                f"must be in (0, 1] (the fraction of elements kept), got {self.ratio}")


class Compressor(ABC):
    """Lossy (or lossless) encoding of one flat fp32 vector.

    ``summable``: the payloads of all devices can be summed element by element and the sum
    decompresses to the sum of what each device sent, so the exchange is one Allreduce. Such
    a compressor must make the same choices on every device (its seed is shared); the others
    get a seed of their own per device and are exchanged by Allgather.
    """

    summable: ClassVar[bool] = False
    #: decompress(compress(x)) == x: error feedback would only ever hold zeros.
    lossless: ClassVar[bool] = False
    #: the payload is (values, int32 indices): what momentum-factor masking needs.
    sparse: ClassVar[bool] = False
    #: compression itself needs the devices' sums mid-way (PowerSGD): it runs its
    #: collectives through :meth:`reduce_mean` instead of compress → exchange → decompress.
    collective: ClassVar[bool] = False
    #: every device's payload parts have the same sizes (they follow from d and the settings),
    #: so the exchange gathers each part as one (devices, n) tensor and calls :meth:`mean_rows_`.
    uniform: ClassVar[bool] = False
    Settings: ClassVar[type[CompressionSettings]] = CompressionSettings
    paper: ClassVar[str] = ""  # where the scheme comes from: authors, title, venue, arXiv id (docs/config.md)

    @classmethod
    def from_settings(cls, settings: Any, shapes: Sequence[Sequence[int]], seed: int,
                      unbiased: bool) -> Compressor:
        """Build from the checked ``compression`` section (an instance of ``cls.Settings``, which a
        subclass names in its signature); the run supplies the model layout (``shapes``), a seed,
        and whether the payload must be unbiased (no error feedback)."""
        return cls()

    @abstractmethod
    def compress(self, x: torch.Tensor, step: int = 0, epoch: float = 0.0) -> Payload:
        """Encode ``x``. ``step`` seeds per-step shared choices, ``epoch`` drives warm-up.

        The payload may share memory with ``x``; callers that change one must not read the other.
        """

    @abstractmethod
    def decompress_into(self, payload: Payload, out: torch.Tensor) -> None:
        """Overwrite ``out`` with the dense fp32 vector the payload stands for.

        Writing into a buffer the caller keeps avoids a fresh vector per exchange, whose
        page faults cost as much as the decoding itself at ResNet size.
        """

    def decompress(self, payload: Payload, numel: int) -> torch.Tensor:
        out = torch.empty(numel, dtype=torch.float32)
        self.decompress_into(payload, out)
        return out

    def add_to_(self, out: torch.Tensor, payload: Payload, alpha: float = 1.0) -> None:
        """``out += alpha · decompress(payload)``; sparse payloads override it to skip the dense copy."""
        out.add_(self.decompress(payload, out.numel()), alpha=alpha)

    def mean_payloads_(self, out: torch.Tensor, payloads: Sequence[Payload]) -> None:
        """``out`` = Σ decompress(p) over the devices' payloads, added in rank order, ÷ devices.

        This fallback decodes one payload at a time (a plug-in need not do more); the built-in
        compressors decode all devices in one batched operation.
        """
        out.zero_()
        for payload in payloads:
            self.add_to_(out, payload)
        out.div_(len(payloads))

    def mean_rows_(self, out: torch.Tensor, rows: Payload) -> None:
        """For ``uniform`` compressors: :meth:`mean_payloads_` of the devices' payloads given as
        rows (row d of every part is device d's)."""
        self.mean_payloads_(out, [tuple(part[d] for part in rows) for d in range(rows[0].shape[0])])

    def residual_into(self, out: torch.Tensor, acc: torch.Tensor, sent: Payload) -> None:
        """``out`` = acc − decompress(sent): what error feedback keeps of what was not sent.

        A compressor with an :meth:`add_to_` of its own (a sparse update) adds −sent to a copy of
        ``acc``; one without decodes straight into ``out`` and subtracts, rather than decoding
        into a fresh vector and adding it (the same values: x + (−1)·y is x − y)."""
        if type(self).add_to_ is Compressor.add_to_:
            self.decompress_into(sent, out)
            torch.sub(acc, out, out=out)
        else:
            out.copy_(acc)
            self.add_to_(out, sent, alpha=-1.0)

    def sent_indices(self, payload: Payload) -> torch.Tensor:
        """For ``sparse`` compressors: the int32 indices of the kept elements."""
        if not self.sparse:
            raise TypeError(f"{type(self).__name__} payloads carry no indices")
        return payload[1]

    def reduce_mean(self, x: torch.Tensor, step: int, allreduce_sum_: AllreduceSum,
                    devices: int) -> tuple[Payload, Payload]:
        """For ``collective`` compressors: run the collectives and return two payloads: what
        this device is credited with having sent (for error feedback) and the all-device mean."""
        raise NotImplementedError(f"{type(self).__name__} is not a collective compressor")
