"""The memory a run will take on one rank, estimated before anything is allocated.

A run that does not fit its node dies late: an allocation error after minutes of set-up, or
the kernel's OOM killer taking a rank without a word. The parts that grow with the settings
are known from the model alone, built once on CPU (:func:`edgempi.models.probe`): its
parameters (weights, gradient, optimizer state, for the rank and for each of its devices) and
the activations a batch keeps for the backward pass (measured by a forward pass of one sample).
What a method keeps besides (a reference model, control variates) is left out, so the estimate
is a floor: a run refused here could never have run. The exception is state that grows with the
run rather than the settings (SCAFFOLD's control variates of every device a cohort has sampled,
``MethodSettings.kept_rows``): it is counted at its end-of-run size.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from edgempi.host.machine import available_memory
from edgempi.util.units import human_bytes

if TYPE_CHECKING:
    from torch import nn

    from edgempi.config import RunConfig

FLOAT = 4  # bytes: parameters, gradients, optimizer state and activations are fp32


@dataclass
class Footprint:
    """Bytes per rank by what takes them, each with the config key that sizes it."""

    params: int
    model: int  # the rank's model, its gradient and its optimizer state
    devices: int  # the rows of a rank's several devices (parallel.devices_per_rank > 1)
    activations: int  # what a batch's forward pass keeps for the backward pass
    rows: int  # the devices a rank holds at once: devices_per_rank, or its share of a cohort
    rows_key: str = "parallel.devices_per_rank"  # the config key that sizes ``rows``
    kept: int = 0  # what the method keeps that grows with the run (MethodSettings.kept_rows)

    @property
    def total(self) -> int:
        return self.model + self.devices + self.activations + self.kept

    def largest(self) -> str:
        """The config key of the largest part: the one to change."""
        parts = {"model.name": self.model, self.rows_key: self.devices,
                 "train.batch_size": self.activations, "train.steps": self.kept}
        return max(parts, key=parts.__getitem__)


def activations_per_sample(model: nn.Module, channels: int, side: int) -> int:
    """Values the leaf modules output for one sample: what autograd keeps for the backward pass."""
    import torch

    found = [0]

    def count(module: nn.Module, inputs: tuple, output: object) -> None:
        shared = any(isinstance(x, torch.Tensor) and x.data_ptr() == getattr(output, "data_ptr", int)() for x in inputs)
        if isinstance(output, torch.Tensor) and not shared:  # an in-place ReLU or an Identity keeps nothing new
            found[0] += output.numel()

    hooks = [m.register_forward_hook(count) for m in model.modules() if not list(m.children())]
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, channels, side, side))
    finally:
        for hook in hooks:
            hook.remove()
    return found[0]


def estimate(cfg: RunConfig, ranks: int) -> Footprint | None:
    """The footprint of one of the ``ranks`` ranks of ``cfg``, or None if its model cannot be
    built here. With ``algorithm.cohort`` a rank holds rows for its share of the cohort only."""
    from edgempi import cohort, models

    model = models.probe(cfg)
    if model is None:
        return None
    shape = cfg.data.input_shape()
    try:
        per_sample = activations_per_sample(model, *shape)
    except (RuntimeError, ValueError, TypeError):  # a plug-in model that wants other inputs
        per_sample = 0
    params = sum(t.numel() for t in (*model.parameters(), *model.buffers()))
    state = 2 if cfg.train.optimizer == "adam" else int(cfg.train.momentum > 0)
    devices = cohort.slots(cfg, ranks)
    batched = devices if cfg.parallel.batched == "on" else 1
    return Footprint(params=params, model=FLOAT * params * (2 + state),
                     devices=FLOAT * params * (2 + state) * devices if devices > 1 else 0,
                     activations=FLOAT * per_sample * cfg.train.batch_size * batched, rows=devices,
                     rows_key="parallel.devices_per_rank" if cohort.size(cfg) is None else "algorithm.cohort",
                     kept=FLOAT * params * cfg.algorithm.kept_rows(cfg, ranks))


def refusal(cfg: RunConfig, ranks_on_node: int, ranks: int) -> str | None:
    """Why the ``ranks_on_node`` ranks of this node, of the run's ``ranks``, cannot run ``cfg``
    (one line), or None."""
    need = estimate(cfg, ranks)
    free, source = available_memory()
    if need is None or need.total * ranks_on_node <= free:
        return None
    return (f"{need.largest()}: the run needs at least {human_bytes(need.total)} per rank (model of "
            f"{need.params:,} values with gradient and optimizer state {human_bytes(need.model)}, "
            f"{need.rows} device(s) per rank {human_bytes(need.devices)}, activations of a batch "
            f"of {cfg.train.batch_size} {human_bytes(need.activations)}"
            f"{f', state the method keeps for the devices sampled {human_bytes(need.kept)}' if need.kept else ''}"
            f") × {ranks_on_node} rank(s) on this node = "
            f"{human_bytes(need.total * ranks_on_node)}, but {human_bytes(free)} is available ({source})")
