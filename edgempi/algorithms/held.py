"""The model a method holds between syncs: what its last sync produced, after any server step.

Evaluation scores it by default (``train.eval_model: global``): it is what a deployment would
ship and what the method has paid for. The devices' models in mid-round exist only on the
devices; averaging them for a score is an exchange nobody counted.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from edgempi.util.lazy import torch

if TYPE_CHECKING:
    from edgempi.devices import DeviceBank


def take(row: torch.Tensor, positions: slice | torch.Tensor) -> torch.Tensor:
    """The values of ``row`` at ``positions`` (a view for a slice, a copy for an index)."""
    return row[positions] if isinstance(positions, slice) else row.index_select(0, positions)


def take_rows(rows: torch.Tensor, positions: slice | torch.Tensor) -> torch.Tensor:
    """:func:`take` of every row of a bank."""
    return rows[:, positions] if isinstance(positions, slice) else rows.index_select(1, positions)


def put_(row: torch.Tensor, positions: slice | torch.Tensor, values: torch.Tensor) -> None:
    """Write ``values`` at ``positions`` of ``row``."""
    if isinstance(positions, slice):
        row[positions].copy_(values)
    else:
        row.index_copy_(0, positions, values)


def exchanged_positions(bank: DeviceBank, with_buffers: bool, shared: torch.Tensor | None) -> slice | torch.Tensor:
    """Where a weight sync writes the average in a device's row: FedBN's ``shared`` positions,
    else the parameters, and the BatchNorm statistics ``with_buffers``."""
    if shared is not None:
        return shared
    return slice(0, bank.exchanged(with_buffers).shape[1])


class HeldModel:
    """The global model: the values a sync wrote at ``positions`` (the same on every device
    after it), captured from the first device of this rank; the rest of a device's row (FedBN's
    BatchNorm layers, statistics that are not averaged) stays the device's own."""

    def __init__(self, bank: DeviceBank, positions: slice | torch.Tensor) -> None:
        self.bank, self.positions = bank, positions
        self.values = take(bank.storage[0], positions).clone()  # before any step: the shared start

    def capture(self) -> None:
        """Called by a policy right after a sync (and its server step) has set every device."""
        self.values.copy_(take(self.bank.storage[0], self.positions))

    @property
    def covers_buffers(self) -> bool:
        """Does the held model include the BatchNorm statistics (the sync averaged them)?"""
        flat = self.bank.flat
        return isinstance(self.positions, slice) and self.positions.stop > flat.numel and flat.buffers.numel() > 0
