"""The one training loop: batch → forward/backward → policy hooks → optimizer → recorder.

Every method is a policy (``edgempi.algorithms``) that exchanges gradients after backward or
weights after the optimizer step; the loop itself never talks to MPI, and never reads a clock:
the simulated clock observes it (:class:`edgempi.devices.WorkObserver`) as it observes the comm
layer. Read it top to bottom.
"""
from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F

from edgempi import algorithms, batched, cohort, data, models, parallel
from edgempi.comm import Comm
from edgempi.config import RunConfig
from edgempi.data.concept_drift import DriftingLoader, DriftSchedule
from edgempi.devices import DeviceBank, WorkObserver
from edgempi.evaluate import evaluate, scored_overlays, test_shards
from edgempi.flat import FlatModel
from edgempi.record import EVAL_COLUMNS, STEP_COLUMNS, NullRecorder, Recorder
from edgempi.settings import ConfigError
from edgempi.sim import Clock, device_link
from edgempi.util import optim
from edgempi.util.progress import Progress

if TYPE_CHECKING:
    from edgempi.checkpoint import Checkpointer


class TrainingError(RuntimeError):
    """Training cannot go on (e.g. the loss became NaN)."""


@dataclass
class Seeds:
    """Independent streams from one seed (``SeedSequence.spawn``): partition, model init,
    each device's data order, and the network draws."""

    partition: int
    init: int
    devices: list[int]
    network: int

    @classmethod
    def from_seed(cls, seed: int, devices: int) -> Seeds:
        """Draw every stream of a run of ``devices`` devices once; only the per-device streams
        depend on ``devices`` (which the parallel mode makes of the ranks)."""
        part, init, dev, net = np.random.SeedSequence(seed).spawn(4)

        def draw(ss: np.random.SeedSequence) -> int:
            return int(ss.generate_state(1, np.uint64)[0] >> np.uint64(1))

        return cls(draw(part), draw(init), [draw(child) for child in dev.spawn(devices)], draw(net))


@dataclass
class Setup:
    """Everything a run needs, built identically on every rank before the first collective."""

    cfg: RunConfig
    dataset: data.Dataset
    parts: list[np.ndarray]
    loaders: Sequence[data.Batches]  # one per device of this rank
    steps_per_epoch: int
    total_steps: int
    flat: FlatModel
    optimizer: torch.optim.Optimizer
    peers: Comm  # the devices that average gradients or weights (parallel.ParallelMode.peers)
    clock: Clock  # the simulated edge clock of this rank's devices, told of every exchange
    mode: parallel.ParallelMode  # how the ranks train the devices (parallel.mode)
    drift: DriftSchedule | None = None  # data.drift: when and where the devices' data change
    cohort: cohort.Cohort | None = None  # algorithm.cohort: which population members the devices stand for

    @property
    def partition_counts(self) -> np.ndarray:
        return data.counts(self.dataset.train_y.numpy(), self.parts, self.dataset.num_classes)


def build(cfg: RunConfig, comm: Comm, dataset: data.Dataset | None = None) -> Setup:
    """Data partition, this device's loader, model and optimizer.

    Data-parallel runs need no communication here. A rank stands for ``devices_per_rank``
    devices (numbered rank·M … rank·M + M − 1, so M × ranks devices are the devices of as many
    ranks). Where the parallel mode makes one device of several ranks, it splits them into
    groups here; a device's ranks draw the same batches and share one model. With
    ``algorithm.cohort`` the devices are the population, and a rank holds cohort / ranks of them
    at a time (:mod:`edgempi.cohort`).
    """
    dataset = dataset or load_dataset(cfg)
    local = cohort.slots(cfg, comm.size)  # devices_per_rank, or this rank's share of a cohort
    mode = parallel.mode_of(cfg)
    seeds = Seeds.from_seed(cfg.seed, mode.devices(comm.size))
    # Every rank's modelled edge link (before any split, so sub-groups report to the same clock).
    clock = Clock.for_devices(cfg.network, seeds.network, comm.size * local, comm.rank * local, local)
    comm.host(local, observer=clock)
    peers = mode.peers(comm)
    parts = make_partition(cfg, dataset, seeds)
    # Every rank knows every shard's size, so all agree on the epoch length without talking.
    steps_per_epoch = max(1, int(np.mean([len(p) for p in parts])) // cfg.train.batch_size)
    sampler = cohort.create(cfg, comm.size, comm.rank, len(parts), steps_per_epoch,
                            partial(device_loader, cfg, dataset, parts, seeds),
                            partial(device_link, cfg.network, seeds.network))
    loaders: Sequence[data.Batches] = sampler.loaders if sampler else [
        device_loader(cfg, dataset, parts, seeds, peers.first + d) for d in range(local)]
    drift = None
    if cfg.data.drift.steps:
        drift = DriftSchedule(cfg.data.drift, cfg.seed, peers.devices, dataset.num_classes)
        loaders = [DriftingLoader(drift, peers.first + d, partial(device_loader, cfg, dataset, parts, seeds,
                                                                  peers.first + d)) for d in range(local)]
    total = cfg.train.steps or math.ceil((cfg.train.epochs or 1.0) * steps_per_epoch)

    torch.manual_seed(seeds.init)
    model = models.create(cfg.model.name, num_classes=dataset.num_classes, in_channels=dataset.in_channels,
                          input_size=dataset.input_size, norm=cfg.model.norm)
    model = algorithms.policy_class(cfg.algorithm.name).prepare_model(cfg.algorithm, model, comm)
    flat = FlatModel(mode.wrap(model, dataset, clock.links[0]))
    return Setup(cfg, dataset, parts, loaders, steps_per_epoch, total, flat, make_optimizer(cfg, flat), peers,
                 clock, mode, drift, sampler)


def load_dataset(cfg: RunConfig) -> data.Dataset:
    return data.from_settings(cfg.data, seed=cfg.seed)


def make_partition(cfg: RunConfig, dataset: data.Dataset, seeds: Seeds) -> list[np.ndarray]:
    """Every device's training indices: a function of the config and the device count only
    (one device per stream of ``seeds``)."""
    return data.partition(dataset.train_y.numpy(), len(seeds.devices), cfg.data.partition, seeds.partition,
                          min_samples=cfg.data.min_samples or (1 if cohort.size(cfg) else cfg.train.batch_size),
                          **cfg.data.partition_args())


def device_loader(cfg: RunConfig, dataset: data.Dataset, parts: list[np.ndarray], seeds: Seeds,
                  device: int, shard_of: int | None = None) -> data.DeviceLoader:
    """The batches device ``device`` draws: its shard (or device ``shard_of``'s, after a drift),
    in the order of its own seed. A cohort's member may hold less than a batch: it trains on
    its whole shard at each step."""
    shard = torch.from_numpy(parts[device if shard_of is None else shard_of])
    augment = cfg.data.augment if cfg.data.augment is not None else dataset.augment
    batch = cfg.train.batch_size if cohort.size(cfg) is None else min(cfg.train.batch_size, len(shard))
    return data.DeviceLoader(dataset.train_x[shard], dataset.train_y[shard], batch,
                             seeds.devices[device], *dataset.scaling(cfg.data.normalize), augment)


def make_optimizer(cfg: RunConfig, flat: FlatModel) -> torch.optim.Optimizer:
    """One optimizer over the single flat parameter tensor: one fused update per step (torch's,
    eager only: see :mod:`edgempi.util.optim`)."""
    t = cfg.train
    if t.optimizer == "adam":
        return optim.Adam([flat.params], lr=t.lr, eps=t.adam_eps, weight_decay=t.weight_decay)
    return optim.SGD([flat.params], lr=t.lr, momentum=t.momentum, nesterov=t.nesterov,
                     weight_decay=t.weight_decay)


def learning_rate(cfg: RunConfig, step: int, steps_per_epoch: int, total: int) -> float:
    """Linear warm-up, then constant, step (at epoch milestones) or cosine decay."""
    t = cfg.train
    if step < t.warmup_steps:
        return t.lr * (step + 1) / t.warmup_steps
    if t.schedule == "step":
        epoch = step / steps_per_epoch
        return t.lr * t.gamma ** sum(epoch >= m for m in t.milestones)
    if t.schedule == "cosine":
        progress = (step - t.warmup_steps) / max(1, total - t.warmup_steps)
        return 0.5 * t.lr * (1 + math.cos(math.pi * progress))
    return t.lr


@dataclass
class Outcome:
    """What a run leaves besides its file: the final weights and the rows it recorded."""

    storage: torch.Tensor
    steps: list[dict[str, float]] = field(default_factory=list)
    evals: list[dict[str, float]] = field(default_factory=list)
    syncs: list[dict[str, Any]] = field(default_factory=list)


class LocalSteps(Protocol):
    """This rank's devices' local steps, one after another (:class:`EachDevice`) or as one
    batched computation (:class:`edgempi.batched.BatchedSteps`), chosen once (:func:`local_steps`)."""

    def steps(self, step: int) -> float:
        """Every device: batch, forward, backward, the method's per-device hook and, unless its
        gradient is exchanged first, its optimizer step. Returns the sum of the losses."""

    def step_all(self) -> None:
        """Every device's optimizer step with its exchanged gradient."""


class EachDevice:
    """The devices one after another, each made the model's in turn (:meth:`DeviceBank.each`)."""

    def __init__(self, flat: FlatModel, bank: DeviceBank, optimizer: torch.optim.Optimizer,
                 loaders: Sequence[data.Batches], policy: algorithms.Policy, observer: WorkObserver,
                 exchanges_gradients: bool) -> None:
        self.flat, self.bank, self.optimizer, self.loaders = flat, bank, optimizer, loaders
        self.policy, self.observer, self.exchanges_gradients = policy, observer, exchanges_gradients

    def steps(self, step: int) -> float:
        loss_sum = 0.0
        for device in self.bank.each(save_grads=self.exchanges_gradients):
            with self.observer.local_steps(range(device, device + 1)):  # SyncBN, a device's ranks talk in forward
                x, y = self.loaders[device].batch(step)
                self.flat.zero_grad()
                loss = F.cross_entropy(self.flat.model(x), y)
                loss.backward()
                self.policy.before_device_step(device, step)
                if not self.exchanges_gradients:
                    self.optimizer.step()
                loss_sum += loss.item()
        return loss_sum

    def step_all(self) -> None:
        for device in self.bank.each(load_grads=self.bank.count > 1):
            with self.observer.device_work(range(device, device + 1)):
                self.optimizer.step()


def local_steps(setup: Setup, bank: DeviceBank, policy: algorithms.Policy,
                exchanges_gradients: bool) -> tuple[LocalSteps, str | None]:
    """The devices' steps as one computation where they can be (``parallel.batched``), else one
    after another, and why (None: batched)."""
    reason = batched.why_not(setup.cfg, setup.flat.model) if bank.count > 1 else "one device per rank"
    parts = (setup.flat, bank, setup.optimizer, setup.loaders)
    if reason is None:
        return batched.BatchedSteps(*parts, setup.clock, exchanges_gradients), None
    return EachDevice(*parts, policy, setup.clock, exchanges_gradients), reason


class Trainer:
    """The loop and the little state it carries between steps (what a checkpoint saves)."""

    def __init__(self, setup: Setup, comm: Comm, recorder: Recorder | NullRecorder | None = None,
                 progress: bool = False) -> None:
        self.setup, self.comm, self.cfg, self.flat, self.clock = setup, comm, setup.cfg, setup.flat, setup.clock
        self.recorder = recorder or NullRecorder()
        self.loaders = setup.loaders
        comm.broadcast_(self.flat.storage)  # one starting model, whatever each rank's RNG did
        policy, self.capabilities = algorithms.policy_class(setup.cfg.algorithm.name), setup.cfg.algorithm.capabilities
        self.bank = DeviceBank(setup.flat, setup.optimizer, len(self.loaders), self.capabilities.exchanges_gradients)
        self.policy = policy(algorithms.Context(setup.cfg, setup.peers, setup.flat, setup.steps_per_epoch,
                                               setup.optimizer, self.bank, setup.mode.group_reduce, setup.clock))
        self.local, self.unbatched_because = local_steps(setup, self.bank, self.policy,
                                                         self.capabilities.exchanges_gradients)
        self.observer: WorkObserver = setup.clock
        if self.capabilities.models_differ and self.policy.held is None and setup.cfg.train.eval_model == "global":
            raise ConfigError("train.eval_model", f"{setup.cfg.algorithm.name} keeps no held model (Policy.held) "
                              "though its devices' models differ, so no model it produced can be scored; give it "
                              "one (docs/plugins.md) or set train.eval_model=average")
        test = setup.dataset
        self.test_shards = [(test.test_x[s], test.test_y[s]) for s in test_shards(len(test.test_y), setup.peers)]
        self.outcome = Outcome(setup.flat.storage if self.bank.count == 1 else self.bank.storage)
        self.progress = progress and comm.rank == 0
        self.step = 0
        self.wall_before = 0.0  # wall seconds of earlier sessions of a resumed run
        self.loss_sum, self.loss_count = 0.0, 0

    # -- what a row holds ------------------------------------------------------------------
    def counters(self, step: int) -> dict[str, float]:
        """Cumulative per-device means of the ledger and of the measured compute, and the
        clocks (collective)."""
        ledger, comm = self.comm.ledger, self.comm
        keys = ("rounds", "bytes_up", "bytes_down", "ctrl_bytes", "compute_s", "comm_s")
        totals = [ledger.rounds, ledger.bytes_up, ledger.bytes_down, ledger.ctrl_bytes, self.clock.compute_s,
                  ledger.comm_s]
        means = comm.reduce_metrics(totals) / comm.devices
        return {"step": step, "epoch": step / self.setup.steps_per_epoch, **dict(zip(keys, means.tolist())),
                "wall_s": self.wall_before + time.perf_counter() - self.started, "sim_s": self.clock.sim_time(comm)}

    def record_eval(self, step: int) -> bool:
        """Evaluate and record; True if the run has reached ``train.stop_at_acc`` (every rank
        sees the same reduced accuracy, so all stop at the same step)."""
        with self.comm.uncounted(), self.clock.paused():
            shards = [(x, loader.relabel(y, step)) for (x, y), loader in zip(self.test_shards, self.loaders)]
            overlays = scored_overlays(self.bank, self.setup.peers, self.policy, self.cfg.train.eval_model,
                                       self.cfg.algorithm.eval_stats == "average")
            test_loss, test_acc = evaluate(self.bank, self.setup.peers, shards, self.loaders[0].normalize, overlays)
        if not math.isfinite(test_loss):  # reduced: every rank stops here, before the row is written
            raise TrainingError(f"the test loss became {test_loss} at step {step}; lower train.lr")
        row = {**self.counters(step), "test_loss": test_loss, "test_acc": test_acc}
        self.recorder.append("evals", row)
        self.outcome.evals.append(row)
        self.bar.evaluated(row, self.setup.total_steps)
        target = self.cfg.train.stop_at_acc
        return target is not None and test_acc >= target

    def record_steps(self, step: int) -> None:
        """A /steps row; the loss is reduced here, so every rank sees a NaN at the same step."""
        loss_sum, count = self.comm.reduce_metrics([self.loss_sum, self.loss_count])
        loss = loss_sum / count
        if not math.isfinite(loss):
            raise TrainingError(f"the training loss became {loss} by step {step}; lower train.lr")
        row = {**self.counters(step), "train_loss": loss, "lr": self.setup.optimizer.param_groups[0]["lr"]}
        self.recorder.append("steps", row)
        self.outcome.steps.append(row)
        self.loss_sum, self.loss_count = 0.0, 0

    # -- one step --------------------------------------------------------------------------
    def train_step(self, step: int) -> float:
        """Every device of this rank: batch, forward, backward, the method's per-device hook
        and, unless the method exchanges gradients first, its optimizer step; then the method's
        exchanges over all devices, with the optimizer steps that wait for a gradient exchange.

        The observer (the simulated clock) is told whose work each part is: each device's
        local step joins the clock before the step's exchanges, the method's part after them.
        """
        if self.setup.cohort is not None:
            self.setup.cohort.begin(step, self)
        for group in self.setup.optimizer.param_groups:
            group["lr"] = learning_rate(self.cfg, step, self.setup.steps_per_epoch, self.setup.total_steps)
        loss_sum = self.local.steps(step)
        with self.observer.method_work():
            if self.policy.after_backward(step) and self.capabilities.exchanges_gradients:
                self.local.step_all()
            sync = self.policy.after_step(step)
        if sync is not None:
            self.recorder.append("syncs", sync)
            self.outcome.syncs.append(sync)
        self.loss_sum, self.loss_count = self.loss_sum + loss_sum, self.loss_count + self.bank.count
        return loss_sum / self.bank.count

    def run(self, checkpoint: Checkpointer | None = None) -> Outcome:
        """Train from ``self.step`` to the end; rank 0 records, every rank computes."""
        total, cfg = self.setup.total_steps, self.cfg
        eval_every = cfg.train.eval_every or self.setup.steps_per_epoch
        self.bar = Progress(self.progress, total, start=self.step)
        self.started = time.perf_counter()
        if self.step == 0:
            self.record_eval(0)
        self.flat.model.train()
        while self.step < total:
            loss = self.train_step(self.step)
            self.step += 1
            done, reached = self.step, False
            evaluate_now = done % eval_every == 0 or done == total
            logged = done % cfg.train.log_every == 0 or done == total
            if logged:
                self.record_steps(done)
                reached = evaluate_now and self.record_eval(done)
                if checkpoint is not None and done < total and not reached:
                    checkpoint.maybe_save(self)
            elif evaluate_now:
                reached = self.record_eval(done)
            self.bar.step(loss)
            if reached:  # train.stop_at_acc: the last /steps row is the step the run ended at
                if not logged:
                    self.record_steps(done)
                break
        self.bar.close()
        return self.outcome

    # -- checkpoints -----------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Everything that makes the next step of this device what it would have been."""
        held = self.policy.held  # the loop keeps it, so a plug-in's held model resumes too
        return {"step": self.step, **self.bank.state_dict(), "policy": self.policy.state_dict(),
                "held": None if held is None else held.values.clone(),
                "ledger": self.comm.ledger.as_dict(), "clock": self.clock.state_dict(),
                "torch_rng": torch.get_rng_state(), "wall_s": self.wall_before + time.perf_counter() - self.started}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step = state["step"]
        self.bank.load_state_dict(state)
        self.policy.load_state_dict(state["policy"])
        if self.policy.held is not None:
            self.policy.held.values.copy_(state["held"])
        for key, value in state["ledger"].items():
            setattr(self.comm.ledger, key, value)
        self.clock.load_state_dict(state["clock"])
        torch.set_rng_state(state["torch_rng"])
        self.wall_before = state["wall_s"]


def tables(setup: Setup) -> dict[str, tuple[str, ...]]:
    syncs = ("step", *setup.cfg.algorithm.capabilities.sync_columns)
    return {"steps": STEP_COLUMNS, "evals": EVAL_COLUMNS, "syncs": syncs}
