"""The devices of one rank (``parallel.devices_per_rank``), kept as rows of a few dense banks.

A rank can stand for many edge devices: each has its own model, BatchNorm statistics,
optimizer state and random stream (dropout), but only one model exists as modules. A device's
step copies its row into that model, trains, and copies it back, so an idle device costs its
numbers and nothing else (no modules, no autograd state). Optimizer state is never copied: the optimizer is handed
views of the device's rows and updates them in place.

With one device per rank the bank *is* the model's storage and every swap is a no-op.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager
from typing import Any, Protocol

import numpy as np

from edgempi.flat import FlatModel
from edgempi.util.lazy import torch


class WorkObserver(Protocol):
    """Told of the devices' local work, as the comm layer tells an ``ExchangeObserver`` of their
    exchanges (e.g. :class:`edgempi.sim.Clock`, which times each body): the loop and its local
    steps only say whose work a stretch of code is."""

    def local_steps(self, devices: range) -> AbstractContextManager[None]:
        """The body is one local step of each of ``devices`` of this rank."""

    def method_work(self) -> AbstractContextManager[None]:
        """The body is the method's part of a step (its hooks and exchanges), for all devices."""

    def device_work(self, devices: range) -> AbstractContextManager[None]:
        """Inside :meth:`method_work`: the body is more work of ``devices`` (an optimizer step)."""


class DeviceBank:
    """Row ``d`` of ``storage`` (and of ``grads``, when the method exchanges gradients) is
    this rank's device ``d``; policies read and average the rows, the loop trains one at a time."""

    def __init__(self, flat: FlatModel, optimizer: torch.optim.Optimizer, count: int, keep_grads: bool) -> None:
        self.flat, self.optimizer, self.count = flat, optimizer, count
        self._grads: torch.Tensor | None = None  # several devices keep their gradients only where they are exchanged
        if count == 1:
            self.storage = flat.storage.view(1, -1)
            self._grads = flat.grads.view(1, -1)
        else:  # every device starts from the model as it is now (the shared initial model)
            self.storage = flat.storage.repeat(count, 1)
            if keep_grads:
                self._grads = torch.zeros(count, flat.numel)
        self.optimizer_rows: dict[str, torch.Tensor] = {}
        self.stepped = np.zeros(count, dtype=bool)  # has the device's optimizer state been created?
        # Each device draws from the stream a rank of its own would have had: all start alike.
        self.rng_states = [torch.get_rng_state()] * count if count > 1 else []

    @property
    def grads(self) -> torch.Tensor:
        """Row ``d``: device ``d``'s gradient, for a method that exchanges gradients."""
        if self._grads is None:
            raise ValueError("the devices' gradients are kept only for a method that exchanges them "
                             "(DeviceBank(keep_grads=True))")
        return self._grads

    @property
    def params(self) -> torch.Tensor:
        return self.storage[:, :self.flat.numel]

    def exchanged(self, include_buffers: bool) -> torch.Tensor:
        """Every device's row of what a weight exchange sends (cf. :meth:`FlatModel.exchanged`)."""
        return self.storage if include_buffers else self.params

    def each(self, load_grads: bool = False, save_grads: bool = False) -> Iterator[int]:
        """Make each device in turn the model's; yields its index on this rank."""
        for device in range(self.count):
            self.activate(device, load_grads)
            yield device
            self.deactivate(device, save_grads)

    def activate(self, device: int, load_grads: bool = False) -> None:
        if self.count == 1:
            return
        self.flat.storage.copy_(self.storage[device])
        torch.set_rng_state(self.rng_states[device])
        if load_grads:
            self.flat.grads.copy_(self.grads[device])
        state = self.optimizer.state
        if self.stepped[device]:
            state[self.flat.params] = {key: rows[device] for key, rows in self.optimizer_rows.items()}
        else:
            state.pop(self.flat.params, None)

    def deactivate(self, device: int, save_grads: bool = False) -> None:
        if self.count == 1:
            return
        self.storage[device].copy_(self.flat.storage)
        self.rng_states[device] = torch.get_rng_state()
        if save_grads:
            self.grads[device].copy_(self.flat.grads)
        state = self.optimizer.state.get(self.flat.params)
        if not state:
            return
        self.stepped[device] = True
        for key, value in state.items():
            rows = self.optimizer_rows.get(key)
            if rows is None:
                rows = self.optimizer_rows[key] = torch.zeros(self.count, *value.shape, dtype=value.dtype)
            if value.data_ptr() != rows[device].data_ptr():  # first step: the optimizer made a new tensor
                rows[device].copy_(value)

    def state_dict(self) -> dict[str, Any]:
        if self.count == 1:
            return {"storage": self.flat.storage.clone(), "optimizer": self.optimizer.state_dict()}
        return {"storage": self.storage.clone(),
                "optimizer_rows": {k: v.clone() for k, v in self.optimizer_rows.items()},
                "stepped": self.stepped.copy(), "rng_states": list(self.rng_states)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.count == 1:
            self.flat.storage.copy_(state["storage"])
            self.optimizer.load_state_dict(state["optimizer"])
            return
        self.storage.copy_(state["storage"])
        self.optimizer_rows = {k: v.clone() for k, v in state["optimizer_rows"].items()}
        self.stepped = state["stepped"].copy()
        self.rng_states = list(state["rng_states"])
