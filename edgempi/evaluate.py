"""Distributed evaluation: each rank scores a shard of the test set, the sums are reduced."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from edgempi.comm import Comm
from edgempi.flat import FlatModel


def test_shard(n: int, comm: Comm) -> slice:
    bounds = np.linspace(0, n, comm.size + 1).astype(int)
    return slice(int(bounds[comm.rank]), int(bounds[comm.rank + 1]))


@torch.no_grad()
def evaluate(flat: FlatModel, comm: Comm, x: torch.Tensor, y: torch.Tensor, normalize, average: bool,
             average_buffers: bool = True, batch_size: int = 1000) -> tuple[float, float]:
    """(test loss, test accuracy) of the model, or of the devices' average model if ``average``.

    The average includes BatchNorm statistics unless ``average_buffers`` is false, in which
    case each device scores its test shard with the averaged weights and its own statistics.
    Averaging is measurement, not the method's traffic, so it is not counted in the ledger;
    each device's own model is restored after.
    """
    saved = flat.storage.clone() if average else None
    if average:
        comm.average_uncounted_(flat.exchanged(average_buffers))
    model = flat.model
    was_training = model.training
    model.eval()
    loss_sum, correct = 0.0, 0
    for start in range(0, len(x), batch_size):
        xb, yb = normalize(x[start:start + batch_size]), y[start:start + batch_size]
        logits = model(xb)
        loss_sum += F.cross_entropy(logits, yb, reduction="sum").item()
        correct += int((logits.argmax(1) == yb).sum())
    model.train(was_training)
    if saved is not None:
        flat.storage.copy_(saved)
    total_loss, total_correct, total = comm.reduce_metrics([loss_sum, correct, len(x)])
    return total_loss / total, total_correct / total
