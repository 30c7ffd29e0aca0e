"""Distributed evaluation: each device scores a shard of the test set, the sums are reduced."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from edgempi.algorithms import Policy
from edgempi.algorithms.held import exchanged_positions, put_, take_rows
from edgempi.comm import Comm
from edgempi.devices import DeviceBank

Overlay = tuple[slice | torch.Tensor, torch.Tensor]  # values written at positions of every device's row


def test_shards(n: int, comm: Comm) -> list[slice]:
    """The test shards of this rank's devices: the test set split evenly over all devices."""
    bounds = np.linspace(0, n, comm.devices + 1).astype(int)
    return [slice(int(bounds[d]), int(bounds[d + 1])) for d in range(comm.first, comm.first + comm.local)]


def scored_overlays(bank: DeviceBank, comm: Comm, policy: Policy, eval_model: str,
                    average_stats: bool) -> list[Overlay]:
    """What each device's row is overwritten with before it is scored.

    Where all devices hold one model (no ``models_differ`` in the method's capabilities), nothing: each scores its own.
    ``global``: the method's held model (its last sync, after any server step), which it paid
    for. ``average``: the average of the devices' current models (of ``policy.shared`` only,
    FedBN), a measurement some papers score; its exchange is not counted in the ledger.
    ``average_stats`` (``algorithm.eval_stats: average``): BatchNorm statistics averaged too;
    under ``global`` only where the sync did not average them (statistics, not weights).
    """
    if not policy.settings.capabilities.models_differ:
        return []
    numel = bank.flat.numel
    if eval_model == "global":
        held = policy.held
        assert held is not None, "the config refuses eval_model global for a method that holds no model"
        if held.covers_buffers and not average_stats:
            return [(slice(0, numel), held.values[:numel])]
        overlays = [(held.positions, held.values)]
        if average_stats and not held.covers_buffers and policy.shared is None and bank.flat.buffers.numel():
            overlays.append(_average(bank, comm, slice(numel, None)))
        return overlays
    return [_average(bank, comm, exchanged_positions(bank, average_stats, policy.shared))]


def _average(bank: DeviceBank, comm: Comm, positions: slice | torch.Tensor) -> Overlay:
    mean = take_rows(bank.storage, positions).mean(0)
    with comm.uncounted():
        comm.allreduce_sum_(mean)
    return positions, mean.div_(comm.size)


@torch.no_grad()
def evaluate(bank: DeviceBank, comm: Comm, shards: list[tuple[torch.Tensor, torch.Tensor]], normalize,
             overlays: list[Overlay], batch_size: int = 1000) -> tuple[float, float]:
    """(test loss, test accuracy) of the devices' models, each with ``overlays`` written over it
    (:func:`scored_overlays`).

    Each device of this rank scores its own shard (``shards``, one per device) with its model,
    so the figures are those of one device per rank. The models are restored after.
    """
    flat = bank.flat
    saved = flat.storage.clone()
    model = flat.model
    was_training = model.training
    model.eval()
    loss_sum, correct, count = 0.0, 0, 0
    for device, (x, y) in enumerate(shards):
        flat.storage.copy_(bank.storage[device])
        for positions, values in overlays:
            put_(flat.storage, positions, values)
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
