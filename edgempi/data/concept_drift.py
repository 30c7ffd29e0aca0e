"""Concept drift (as in Kamp et al. 2018): at given steps the distribution a device draws from changes.

``data.drift`` names the steps and what happens at each, to every device or to a seeded
fraction of them (drawn afresh at each event):

- ``permute_labels``: a seeded permutation of the classes (the same for every affected device);
- ``swap_classes``: the classes of ``data.drift.classes`` swap in pairs (a↔b, c↔d, …);
- ``switch_shards``: the affected devices pass their shards round (each takes the next one's).

Events compose: a device's state after an event is its state before, changed if it was
affected. The whole schedule is a function of (seed, devices, settings), computed alike on
every rank; the loop asks each device's :class:`DriftingLoader` for the batch of a step, so a
resumed run drifts at the same steps. The test labels of each device follow its labels.
"""
from __future__ import annotations

import bisect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgempi.util.lazy import torch

KINDS = ("permute_labels", "swap_classes", "switch_shards")


def _require(condition: bool, key: str, reason: str) -> None:
    from edgempi.settings import require  # no edgempi import at module level: config.py imports this

    require(condition, key, reason)


@dataclass
class DriftConfig:
    """The ``data.drift`` section; no ``steps``: no drift."""

    steps: list[int] = field(default_factory=list)
    """The steps at which a drift event happens (needs ``train.steps``); empty: no drift."""
    kind: str = "permute_labels"
    """What an event does: permute the classes, swap the pairs of ``classes``, or pass shards round the devices."""
    fraction: float = 1.0
    """The fraction of devices an event affects, drawn afresh at each event."""
    classes: list[int] | None = None
    """``swap_classes``: the classes to swap, in pairs (a, b, c, d: a↔b and c↔d)."""

    def check(self, cfg: Any) -> None:
        if not self.steps:
            _require(self.classes is None, "data.drift.classes", "set data.drift.steps too")
            return
        _require(self.kind in KINDS, "data.drift.kind", f"unknown value {self.kind!r} (choose from {', '.join(KINDS)})")
        _require(all(s > 0 for s in self.steps) and self.steps == sorted(set(self.steps)), "data.drift.steps",
                 "must be increasing steps > 0")
        _require(cfg.train.steps is not None, "data.drift.steps", "needs train.steps (drift steps count steps)")
        _require(self.steps[-1] < cfg.train.steps, "data.drift.steps",
                 f"step {self.steps[-1]} is beyond the run (train.steps={cfg.train.steps})")
        _require(0 < self.fraction <= 1, "data.drift.fraction", "must be in (0, 1]")
        pairs = self.classes or []
        _require((self.kind == "swap_classes") == bool(pairs), "data.drift.classes",
                 "swap_classes needs the classes to swap (an even list), and only swap_classes takes them")
        _require(len(pairs) % 2 == 0 and len(set(pairs)) == len(pairs) and min(pairs, default=0) >= 0,
                 "data.drift.classes", "must be distinct class numbers, in pairs")
        _require(cfg.algorithm.capabilities.exchanges, "data.drift.steps",
                 "drift is modelled on devices, not for centralized")


class DriftSchedule:
    """Per event and device: affected or not, the label map, and the shard drawn from."""

    def __init__(self, settings: DriftConfig, seed: int, devices: int, num_classes: int) -> None:
        self.steps = list(settings.steps)
        events = len(self.steps)
        self.affected = np.zeros((events, devices), dtype=bool)
        self.labels = np.tile(np.arange(num_classes), (events + 1, devices, 1))  # [event + 1, device, class]
        self.shards = np.tile(np.arange(devices), (events + 1, 1))  # [event + 1, device]
        for e in range(events):
            rng = np.random.default_rng([seed, 0xD21F7, e])
            chosen = rng.choice(devices, size=max(1, round(settings.fraction * devices)), replace=False)
            self.affected[e, np.sort(chosen)] = True
            change, shards = self._event(settings, rng, num_classes, np.sort(chosen))
            self.labels[e + 1] = np.where(self.affected[e][:, None], change[self.labels[e]], self.labels[e])
            self.shards[e + 1] = self.shards[e]
            self.shards[e + 1, np.sort(chosen)] = self.shards[e, shards]

    @staticmethod
    def _event(settings: DriftConfig, rng: np.random.Generator, num_classes: int,
               chosen: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(the class map, whose shards the chosen devices take) of one event."""
        change = np.arange(num_classes)
        if settings.kind == "permute_labels":
            change = rng.permutation(num_classes)
        elif settings.kind == "swap_classes":
            classes = settings.classes or []  # set: the config refuses swap_classes without them
            a, b = np.array(classes[0::2]), np.array(classes[1::2])
            change[a], change[b] = b, a
        shards = np.roll(chosen, -1) if settings.kind == "switch_shards" else chosen
        return change, shards

    def event(self, step: int) -> int:
        """How many events have happened before ``step`` trains (0: none yet)."""
        return bisect.bisect_right(self.steps, step)

    def arrays(self) -> dict[str, np.ndarray]:
        """What the results file keeps of it (under /partition)."""
        return {"partition/drift_steps": np.asarray(self.steps, np.int64),
                "partition/drift_devices": self.affected.astype(np.int8),
                "partition/drift_labels": self.labels[1:], "partition/drift_shards": self.shards[1:]}


class DriftingLoader:
    """One device's batches under a drift schedule: from the shard and with the labels that
    the events so far have given it. ``make(shard)`` builds this device's loader over a shard."""

    def __init__(self, schedule: DriftSchedule, device: int, make: Callable[[int], Any]) -> None:
        self.schedule, self.device, self.make = schedule, device, make
        self.loaders = {device: make(device)}
        self.normalize = self.loaders[device].normalize
        self.maps = torch.from_numpy(schedule.labels[:, device])

    def loader(self, shard: int) -> Any:
        if shard not in self.loaders:
            self.loaders[shard] = self.make(shard)
        return self.loaders[shard]

    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        e = self.schedule.event(step)
        x, y = self.loader(int(self.schedule.shards[e, self.device])).batch(step)
        return x, self.maps[e][y]

    def relabel(self, y: torch.Tensor, step: int) -> torch.Tensor:
        """Test labels as this device sees them before ``step`` trains."""
        return self.maps[self.schedule.event(step)][y]
