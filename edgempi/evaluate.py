"""Distributed evaluation: each device scores a shard of the test set, the sums are reduced."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from edgempi.comm import Comm
from edgempi.devices import DeviceBank


def test_shards(n: int, comm: Comm) -> list[slice]:
    """The test shards of this rank's devices: the test set split evenly over all devices."""
    bounds = np.linspace(0, n, comm.devices + 1).astype(int)
    return [slice(int(bounds[d]), int(bounds[d + 1])) for d in range(comm.first, comm.first + comm.local)]


@torch.no_grad()
def evaluate(bank: DeviceBank, comm: Comm, shards: list[tuple[torch.Tensor, torch.Tensor]], normalize,
             average: bool, average_buffers: bool = True, batch_size: int = 1000,
             shared: torch.Tensor | None = None) -> tuple[float, float]:
    """(test loss, test accuracy) of the devices' models, or of their average model if ``average``.

    Each device of this rank scores its own shard (``shards``, one per device) with its own
    model, so the figures are those of one device per rank. The average includes BatchNorm
    statistics unless ``average_buffers`` is false, in which case each device uses the
    averaged weights with its own statistics. With ``shared`` (FedBN: the positions of the
    parameters the method averages) only those are averaged: each device keeps its own
    BatchNorm weights and statistics, as it does in training. Averaging is measurement, not the method's
    traffic, so it is not counted in the ledger; the model is restored after.
    """
    flat = bank.flat
    saved = flat.storage.clone()
    mean = None
    if average:
        rows = bank.exchanged(average_buffers) if shared is None else bank.params.index_select(1, shared)
        mean = rows.mean(0)
        comm.average_uncounted_(mean)
    model = flat.model
    was_training = model.training
    model.eval()
    loss_sum, correct, count = 0.0, 0, 0
    for device, (x, y) in enumerate(shards):
        flat.storage.copy_(bank.storage[device])
        if mean is not None and shared is not None:
            flat.params.index_copy_(0, shared, mean)
        elif mean is not None:
            flat.exchanged(average_buffers).copy_(mean)
        for start in range(0, len(x), batch_size):
            xb, yb = normalize(x[start:start + batch_size]), y[start:start + batch_size]
            logits = model(xb)
            loss_sum += F.cross_entropy(logits, yb, reduction="sum").item()
            correct += int((logits.argmax(1) == yb).sum())
        count += len(x)
    model.train(was_training)
    flat.storage.copy_(saved)
    total_loss, total_correct, total = comm.reduce_metrics([loss_sum, correct, count])
    return total_loss / total, total_correct / total
