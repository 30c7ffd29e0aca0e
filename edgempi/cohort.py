"""Cohort sampling (``algorithm.cohort``): a population of devices, of which only a seeded
cohort trains in each round, as in cross-device federated learning.

The population is the devices a run would otherwise have (ranks × ``parallel.devices_per_rank``);
a rank holds only cohort / ranks rows, its *slots*. Each round the members are drawn from
(seed, round), the same on every rank, sorted, and dealt to the ranks in order, so rank r's
slot s is member r·C/ranks + s for that round. Everything downstream (the comm layer, the
ledger, the batched step, the clock) sees the slots as its devices; only what a slot stands
for changes, at the round's start: its loader (the member's shard, drawn in the member's own
order), its link on the modelled network, and, for a fresh start, its row (the global model),
its optimizer state (none) and its random stream (from seed, member, round). So a member's
persistent state is its shard and its seed, and memory grows with the cohort, not the population.
A method that keeps more per device (SCAFFOLD's control variates) keeps it for the devices
sampled so far only, and swaps it in at a round's start (``Policy.begin_cohort``).
"""
from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from edgempi.data.loader import stream_seed
from edgempi.settings import require
from edgempi.util.lazy import lazy_import

if TYPE_CHECKING:
    from edgempi.data import DeviceLoader
    from edgempi.sim import Link

torch = lazy_import("torch")

STREAM = 0xC0407  # keeps the cohort's draws apart from participation's (0xFEDA) of the same seed


def size(cfg: Any) -> int | None:
    """The cohort of a run (None: every device trains every round)."""
    return getattr(cfg.algorithm, "cohort", None)


def slots(cfg: Any, ranks: int) -> int:
    """The rows a rank holds: cohort / ranks with a cohort, else its ``devices_per_rank``."""
    cohort = size(cfg)
    return cfg.parallel.devices_per_rank if cohort is None else cohort // ranks


def population(cfg: Any, ranks: int) -> int:
    """The devices a cohort is drawn from: every device a run of ``ranks`` ranks would have."""
    return ranks * cfg.parallel.devices_per_rank


def check_world(cfg: Any, world_size: int) -> None:
    """A cohort fits the population and deals out evenly over the ranks."""
    cohort = size(cfg)
    if cohort is None:
        return
    devices = population(cfg, world_size)
    require(cohort <= devices, "algorithm.cohort", f"{cohort} is more than the population of {devices} "
            f"devices ({world_size} ranks × parallel.devices_per_rank {cfg.parallel.devices_per_rank})")
    require(cohort % world_size == 0, "algorithm.cohort", f"{cohort} does not divide over the {world_size} ranks "
            "(each rank holds cohort / ranks devices)")


def draw(seed: int, population: int, cohort: int, round_index: int) -> np.ndarray:
    """The members of round ``round_index`` (0, 1, …), sorted: a function of (seed, round)
    only, so every rank, and a resumed run, draws the same without talking."""
    rng = np.random.default_rng([seed, STREAM, round_index])
    return np.sort(rng.choice(population, size=cohort, replace=False))


class Cohort:
    """What this rank's slots stand for, round by round (:meth:`begin`, called by the loop,
    :class:`edgempi.train.Trainer`, before each step); ``loader(d)`` and ``link(d)`` build
    population member d's."""

    def __init__(self, seed: int, population: int, cohort: int, ranks: int, rank: int, period: int,
                 loader: Callable[[int], DeviceLoader], link: Callable[[int], Link]) -> None:
        self.seed, self.population, self.cohort, self.period = seed, population, cohort, period
        self.loader, self.link = loader, link
        self.local = cohort // ranks
        self.first = rank * self.local
        self.devices = self.mine(draw(seed, population, cohort, 0))  # population member of each slot
        self.loaders = [loader(d) for d in self.devices.tolist()]  # the loop's: rebound in place
        self.bound: int | None = None  # the round the slots stand for (None: not begun)

    def mine(self, members: np.ndarray) -> np.ndarray:
        """This rank's share of a round's ``members``: one per slot."""
        return members[self.first:self.first + self.local]

    def begin(self, step: int, trainer: Any) -> None:
        """Before ``step``: if it opens a round, or is the first of a resumed run, bind the
        slots to the round's members; a fresh round also starts them as new (:meth:`start`).
        In a resumed round the rows, optimizer state and streams come from the checkpoint."""
        round_index, offset = divmod(step, self.period)
        if round_index == self.bound:
            return
        members = draw(self.seed, self.population, self.cohort, round_index)
        mine = self.mine(members)
        for slot, device in enumerate(mine.tolist()):
            if self.devices[slot] != device:  # a member kept in its slot keeps its loader
                self.loaders[slot] = self.loader(device)
        self.devices = mine
        trainer.clock.bind([self.link(d) for d in members.tolist()])
        if offset == 0:
            self.start(trainer, round_index)
            trainer.policy.begin_cohort(members)
        self.bound = round_index

    def start(self, trainer: Any, round_index: int) -> None:
        """The slots' members start the round as a stateless client does: from the global
        model (the method's held model), with no optimizer state, and a random stream of
        their own for this round. (A method that keeps state per device swaps it in after:
        :meth:`edgempi.algorithms.Policy.begin_cohort`.)"""
        bank, held = trainer.bank, trainer.policy.held
        bank.storage[:, held.positions] = held.values
        states = [torch.Generator().manual_seed(stream_seed(self.seed, STREAM, d, round_index)).get_state()
                  for d in self.devices.tolist()]
        if bank.count == 1:  # the bank is the model itself: its state is the optimizer's and torch's
            trainer.setup.optimizer.state.pop(bank.flat.params, None)
            torch.set_rng_state(states[0])
        else:
            bank.stepped[:] = False
            bank.rng_states = states


def create(cfg: Any, ranks: int, rank: int, population: int, steps_per_epoch: int,
           loader: Callable[[int], DeviceLoader], link: Callable[[int], Link]) -> Cohort | None:
    """The run's cohort (None without ``algorithm.cohort``)."""
    cohort = size(cfg)
    if cohort is None:
        return None
    return Cohort(cfg.seed, population, cohort, ranks, rank, cfg.algorithm.period(steps_per_epoch), loader, link)


__all__ = ["Cohort", "check_world", "create", "draw", "population", "size", "slots"]
