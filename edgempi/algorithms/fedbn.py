"""FedBN (Li et al., ICLR 2021): BatchNorm layers stay on their device, the rest is averaged.

Each device keeps its BatchNorm weights, biases and running statistics; only the other
parameters cross the network, gathered from their (scattered) places in the flat buffer into
one contiguous buffer, so the exchange is still one collective and the ledger counts only them.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from edgempi.util.lazy import torch

if TYPE_CHECKING:
    from torch import nn

    from edgempi.devices import DeviceBank


def is_batchnorm(module: nn.Module) -> bool:
    return isinstance(module, torch.nn.modules.batchnorm._BatchNorm)


def shared_positions(model: nn.Module) -> torch.Tensor:
    """Positions, in the flat parameter buffer (:class:`edgempi.flat.FlatModel` order), of the
    trainable parameters that do not belong to a BatchNorm layer."""
    local = {id(p) for m in model.modules() if is_batchnorm(m) for p in m.parameters(recurse=False)}
    trainable = [p for p in model.parameters() if p.requires_grad]
    keep = np.concatenate([np.full(p.numel(), id(p) not in local) for p in trainable])
    return torch.from_numpy(np.flatnonzero(keep))


def has_batchnorm(cfg: Any) -> bool:
    """Does the configured model have a BatchNorm layer? (A config check, before any MPI work;
    a model that cannot be built here is reported by the run's own build.)"""
    from edgempi import models

    model = models.probe(cfg)
    return model is None or any(is_batchnorm(m) for m in model.modules())


def average_shared_(average: Callable[[torch.Tensor, np.ndarray | None], int], bank: DeviceBank,
                    index: torch.Tensor, mask: np.ndarray | None) -> int:
    """Average the ``index`` positions of every device's parameters with ``average`` (the
    context's, which also drops the devices that miss a deadline) on a gathered copy, leaving
    the rest of each row as it is; returns how many devices reported."""
    rows = bank.params.index_select(1, index)
    reported = average(rows, mask)
    if reported:
        bank.params.index_copy_(1, index, rows)
    return reported
