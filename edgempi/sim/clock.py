"""The simulated edge clock behind ``sim_s``, and who makes a round's deadline.

The comm layer measures; this module models. :class:`Clock` hears of every exchange of this
rank's devices from :class:`edgempi.comm.Comm` (bytes per device and measured seconds, through
``Comm.host(..., observer=clock)``) and times their local work inside the loop's
:class:`edgempi.devices.WorkObserver` contexts, and turns both into the time the same run would
take on the devices' modelled links (:mod:`edgempi.sim.links`).
"""
from __future__ import annotations

import contextlib
import copy
import time
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from edgempi.sim.links import Link, device_links
from edgempi.sim.settings import NetworkConfig

if TYPE_CHECKING:
    from edgempi.comm import Comm

JITTER_STREAM = 0x4A17  # keeps the per-round draws apart from the per-device ones of the same seed


class Deadline:
    """Stragglers: the server closes a round ``seconds`` after it opened; a device whose modelled
    compute and upload take longer is dropped from it.

    Needs modelled step times (``network.step_ms``), so who is late is a function of the config
    alone: every rank computes the same verdict for every device, without talking.
    """

    def __init__(self, seconds: float, links: list[Link]) -> None:
        self.seconds = seconds
        self.step_s = np.array([link.step_s or 0.0 for link in links])
        self.latency_s = np.array([link.latency_s for link in links])
        self.up_bytes_per_s = np.array([link.up_bytes_per_s for link in links])

    def on_time(self, steps: int, up_bytes: int, slowdown: np.ndarray | float = 1.0) -> np.ndarray:
        """Which devices deliver ``up_bytes`` after ``steps`` local steps before the deadline,
        each taking ``slowdown`` times as long this round (:class:`Jitter`)."""
        return (steps * self.step_s + self.latency_s + up_bytes / self.up_bytes_per_s) * slowdown <= self.seconds


class Jitter:
    """Per-round variation (``network.jitter``): in each exchange every device's round, its
    local steps and its transfers, takes a fresh log-normal factor as long, so the stragglers
    differ from round to round. The factors depend on the seed and the exchange's number
    alone: every rank, and a resumed run, draws the same without talking."""

    def __init__(self, sigma: float, seed: int, devices: int) -> None:
        self.sigma, self.seed, self.devices = sigma, seed, devices
        self._drawn: tuple[int, np.ndarray] = (-1, np.empty(0))  # (exchange, its factors)

    def factors(self, exchange: int) -> np.ndarray:
        """Every device's slowdown in exchange number ``exchange`` (0, 1, …)."""
        if self._drawn[0] != exchange:
            rng = np.random.default_rng([self.seed, JITTER_STREAM, exchange])
            self._drawn = (exchange, np.exp(rng.normal(0.0, self.sigma, self.devices)))
        return self._drawn[1]


class Clock:
    """The simulated time of this rank's devices, per exchange (a *segment*).

    Each exchange closes a segment holding every device's (speed-scaled) local work since the
    previous exchange plus its own transfer on its modelled link; the exchange takes as long
    as the slowest device's segment, which :meth:`sim_time` finds with one reduction over all
    pending segments. The clock also keeps the measured seconds of local work (``compute_s``)
    and of waiting in collectives (``waited_s``: once per rank, however many devices it holds).
    """

    STATE = ("compute_s", "sim_s", "pending_compute_s", "pending_steps", "exchanges", "segments")

    def __init__(self, links: Sequence[Link | None] = (None,), first: int = 0, deadline: Deadline | None = None,
                 jitter: Jitter | None = None) -> None:
        self.links = list(links)  # this rank's devices'
        self.first = first  # the index of this rank's first device among all devices
        self.deadline, self.jitter = deadline, jitter
        self.compute_s = 0.0
        self.sim_s = 0.0  # the closed segments that have been reduced over all ranks
        self.pending_compute_s = [0.0] * len(self.links)  # per device of this rank, in the open segment
        self.pending_steps = 0  # local steps since the last exchange
        self.exchanges = 0  # closed segments: the number of the open one, for network.jitter
        self.segments: list[float] = []  # closed here, not yet reduced
        self.waited_s = 0.0
        self._device_work = np.zeros(len(self.links))  # inside method_work: each device's own work so far
        self._late: tuple[int, np.ndarray] | None = None  # (exchange, this rank's stragglers in it)
        self._paused = False

    @classmethod
    def for_devices(cls, network: NetworkConfig, seed: int, devices: int, first: int, local: int) -> Clock:
        """The clock of devices ``first … first + local − 1`` of ``devices``, modelled as ``network``
        says with the draws of ``seed`` (the same on every rank)."""
        links = device_links(network, seed, devices)
        deadline = Deadline(network.deadline_s, links) if network.deadline_s is not None else None
        jitter = Jitter(network.jitter, seed, devices) if network.jitter > 0 else None
        return cls(links[first:first + local], first, deadline, jitter)

    def _mine(self, mask: np.ndarray) -> np.ndarray:
        return mask[self.first:self.first + len(self.links)]

    # -- stragglers ------------------------------------------------------------------------
    def slowdown(self) -> np.ndarray | float:
        """Every device's slowdown in the open exchange (``network.jitter``; 1 without)."""
        return 1.0 if self.jitter is None else self.jitter.factors(self.exchanges)

    def _my_slowdown(self) -> np.ndarray:
        return np.ones(len(self.links)) if self.jitter is None else self._mine(self.jitter.factors(self.exchanges))

    def on_time(self, up_bytes: int) -> np.ndarray | None:
        """Which devices deliver an upload of ``up_bytes`` before the deadline (None: no deadline)."""
        return None if self.deadline is None else self.deadline.on_time(self.pending_steps, up_bytes,
                                                                        self.slowdown())

    def reporters(self, asked: np.ndarray | None, up_bytes: int) -> np.ndarray | None:
        """The devices that report in the open exchange, which uploads ``up_bytes`` per device:
        the ``asked`` (a mask over all devices; None: all) less, with a deadline
        (``network.deadline_s``), those whose upload would arrive after it. The exchange that
        closes the segment then ends for those stragglers at the deadline."""
        on_time = self.on_time(up_bytes)
        if on_time is None:
            return asked
        asked = np.ones(on_time.shape, bool) if asked is None else asked
        self._late = (self.exchanges, self._mine(asked & ~on_time))
        return asked & on_time

    def bind(self, links: Sequence[Link]) -> None:
        """``algorithm.cohort``: the group's devices (all of them, in order) now stand for
        population members with these ``links``; this rank's take theirs, and a deadline judges
        each by its own. The open segment and the counts stay as they are."""
        self.links = list(links[self.first:self.first + len(self.links)])
        if self.deadline is not None:
            self.deadline = Deadline(self.deadline.seconds, list(links))

    # -- what the comm layer and the loop report -------------------------------------------
    def exchanged(self, up: np.ndarray, down: np.ndarray, seconds: float) -> None:
        """An exchange ended (the comm layer's observer call): each device of this rank sent
        ``up`` and received ``down`` bytes, and the rank waited ``seconds`` for it. Closes the
        segment: this rank's slowest device's local work since the last exchange plus its transfer."""
        if self._paused:
            return
        self.waited_s += seconds
        late = self._late[1] if self._late is not None and self._late[0] == self.exchanges else None
        self._late = None
        slowest = 0.0
        for i, (link, pending, u, d, f) in enumerate(zip(self.links, self.pending_compute_s, up.tolist(),
                                                         down.tolist(), self._my_slowdown().tolist())):
            if late is not None and late[i] and self.deadline is not None:
                # the server waited until the deadline, then went on
                arrives = self.deadline.seconds
            elif link is None or u == d == 0:
                slowest = max(slowest, pending)
                continue
            else:
                arrives = pending + (link.upload_s(u) * f if u else 0.0)
            slowest = max(slowest, arrives + (link.download_s(d) * f if d and link is not None else 0.0))
        self.segments.append(slowest)
        self.pending_compute_s = [0.0] * len(self.links)
        self.pending_steps = 0
        self.exchanges += 1

    def add_compute(self, seconds: float, device: int = 0, step: bool = True) -> None:
        """Local work of a device of this rank, measured here: one local ``step``, or more work
        of one. The modelled device takes ``compute_factor`` times longer, or, with
        ``network.step_ms``, the modelled time of a step (and nothing more for the rest).

        ``seconds`` is wall time less the collectives within it; rounding can leave it a hair
        below zero, and local work never takes less than nothing."""
        seconds = max(0.0, seconds)
        link = self.links[device]
        self.compute_s += seconds
        if link is None:
            self.pending_compute_s[device] += seconds
        elif step or link.step_s is None:  # the open exchange's slowdown now, so sim_s never goes back
            self.pending_compute_s[device] += link.compute_s(seconds) * float(self._my_slowdown()[device])
        if step and device == 0:
            self.pending_steps += 1

    def mark(self) -> tuple[float, float]:
        """Now, for :meth:`work_since`."""
        return time.perf_counter(), self.waited_s

    def work_since(self, mark: tuple[float, float]) -> float:
        """Wall seconds since ``mark`` less those this rank spent in collectives since."""
        return time.perf_counter() - mark[0] - (self.waited_s - mark[1])

    # -- the loop's work (edgempi.devices.WorkObserver) -----------------------------------
    @contextlib.contextmanager
    def local_steps(self, devices: range) -> Iterator[None]:
        """The body is one local step of each of ``devices`` (of this rank): its work, less the
        collectives within it (halos of a model split over ranks, SyncBN), is shared evenly among
        them."""
        mark = self.mark()
        yield
        share = self.work_since(mark) / len(devices)
        for device in devices:
            self.add_compute(share, device)

    @contextlib.contextmanager
    def method_work(self) -> Iterator[None]:
        """The body is the method's part of a step: its exchanges, what it computes around them,
        and the optimizer steps that wait for a gradient exchange (:meth:`device_work`). All of
        it joins the clock after the body's exchanges: each device its own work, and the rest,
        less the collectives, shared evenly (one wait per rank, however many devices it holds)."""
        mark = self.mark()
        self._device_work = np.zeros(len(self.links))
        yield
        own = self._device_work
        rest = self.work_since(mark) - own.sum()
        for device, seconds in enumerate((own + rest / len(own)).tolist()):
            self.add_compute(seconds, device, step=False)

    @contextlib.contextmanager
    def device_work(self, devices: range) -> Iterator[None]:
        """Inside :meth:`method_work`: the body is more work of ``devices`` (their optimizer step
        after the gradient exchange), shared evenly among them."""
        mark = self.mark()
        yield
        self._device_work[devices.start:devices.stop] += self.work_since(mark) / len(devices)

    # -- what the loop reads ---------------------------------------------------------------
    def sim_time(self, group: Comm) -> float:
        """Simulated seconds so far: the sum over exchanges of the slowest device's segment,
        plus the open segment's work so far.

        Collective over ``group`` (every rank has closed the same exchanges): one MAX reduction
        of the pending segments, not counted as traffic. A round with a deadline ends there for
        every device, so the open segment counts no device's work past it: a row written inside
        a round never shows more time than the round will take when it closes.
        """
        open_s = max(self.pending_compute_s)
        if self.deadline is not None:
            open_s = min(open_s, self.deadline.seconds)
        slowest = group.reduce_metrics(np.array([*self.segments, open_s], dtype=np.float64), "max")
        self.sim_s += float(slowest[:-1].sum())
        self.segments.clear()
        return self.sim_s + float(slowest[-1])

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Exchanges inside (an evaluation's) are measurement, not the run's: not on the clock."""
        self._paused = True
        try:
            yield
        finally:
            self._paused = False

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint keeps, so a resumed run's clock (and jitter draws) go on as they were."""
        return {key: copy.copy(getattr(self, key)) for key in self.STATE}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key in self.STATE:
            setattr(self, key, copy.copy(state[key]))
