"""The one training loop: batch → forward/backward → policy hooks → optimizer → recorder.

Every method is a policy (``edgempi.algorithms``) that exchanges gradients after backward or
weights after the optimizer step; the loop itself never talks to MPI. Read it top to bottom.
"""
from __future__ import annotations

import math
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np
import torch
import torch.nn.functional as F

from edgempi import algorithms, data, models
from edgempi.comm import Comm
from edgempi.config import RunConfig
from edgempi.evaluate import evaluate, test_shard
from edgempi.flat import FlatModel
from edgempi.record import EVAL_COLUMNS, STEP_COLUMNS, NullRecorder, Recorder


class TrainingError(RuntimeError):
    """Training cannot go on (e.g. the loss became NaN)."""


@dataclass
class Seeds:
    """Independent streams from one seed (``SeedSequence.spawn``): partition, model init, devices."""

    partition: int
    init: int
    devices: list[int]

    @classmethod
    def from_seed(cls, seed: int, devices: int) -> "Seeds":
        part, init, dev = np.random.SeedSequence(seed).spawn(3)

        def draw(ss: np.random.SeedSequence) -> int:
            return int(ss.generate_state(1, np.uint64)[0] >> np.uint64(1))

        return cls(draw(part), draw(init), [draw(child) for child in dev.spawn(devices)])


@dataclass
class Setup:
    """Everything a run needs, built identically on every rank before the first collective."""

    cfg: RunConfig
    dataset: data.Dataset
    parts: list[np.ndarray]
    loader: Iterable[tuple[torch.Tensor, torch.Tensor]]
    steps_per_epoch: int
    total_steps: int
    flat: FlatModel
    optimizer: torch.optim.Optimizer

    @property
    def partition_counts(self) -> np.ndarray:
        return data.counts(self.dataset.train_y.numpy(), self.parts, self.dataset.num_classes)


def build(cfg: RunConfig, comm: Comm, dataset: data.Dataset | None = None) -> Setup:
    """Data partition, this device's loader, model and optimizer: no communication."""
    seeds = Seeds.from_seed(cfg.seed, comm.size)
    if dataset is None:
        dataset = data.load(cfg.data.name, cfg.data.root, cfg.data.download, seed=cfg.seed,
                            synthetic_sizes=(cfg.data.synthetic_train, cfg.data.synthetic_test))
    parts = data.partition(dataset.train_y.numpy(), comm.size, cfg.data.partition, seeds.partition)
    loader = device_loader(cfg, dataset, parts, seeds, comm.rank)
    # Every rank knows every shard's size, so all agree on the epoch length without talking.
    steps_per_epoch = max(1, int(np.mean([len(p) for p in parts])) // cfg.train.batch_size)
    total = cfg.train.steps or math.ceil((cfg.train.epochs or 1.0) * steps_per_epoch)

    torch.manual_seed(seeds.init)
    model = models.create(cfg.model.name, num_classes=dataset.num_classes, in_channels=dataset.in_channels,
                          input_size=dataset.input_size, norm=cfg.model.norm)
    flat = FlatModel(model)
    return Setup(cfg, dataset, parts, loader, steps_per_epoch, total, flat, make_optimizer(cfg, flat))


def device_loader(cfg: RunConfig, dataset: data.Dataset, parts: list[np.ndarray], seeds: Seeds,
                  device: int) -> data.DeviceLoader:
    """The batches device ``device`` draws: its shard, in the order of its own seed."""
    shard = torch.from_numpy(parts[device])
    return data.DeviceLoader(dataset.train_x[shard], dataset.train_y[shard], cfg.train.batch_size,
                             seeds.devices[device], dataset.mean, dataset.std)


def make_optimizer(cfg: RunConfig, flat: FlatModel) -> torch.optim.Optimizer:
    """One optimizer over the single flat parameter tensor: one fused update per step."""
    t = cfg.train
    if t.optimizer == "adam":
        return torch.optim.Adam([flat.params], lr=t.lr, weight_decay=t.weight_decay)
    return torch.optim.SGD([flat.params], lr=t.lr, momentum=t.momentum, nesterov=t.nesterov,
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


def threads_per_rank(cfg: RunConfig, comm: Comm) -> int:
    return cfg.train.threads or max(1, (os.cpu_count() or 1) // comm.node_size())


@dataclass
class Outcome:
    """What a run leaves besides its file: the final weights and the rows it recorded."""

    storage: torch.Tensor
    steps: list[dict[str, float]] = field(default_factory=list)
    evals: list[dict[str, float]] = field(default_factory=list)
    syncs: list[dict[str, Any]] = field(default_factory=list)


class Progress:
    """A tqdm bar on rank 0 when stderr is a terminal, else one log line per evaluation."""

    def __init__(self, enabled: bool, total: int) -> None:
        self.bar = None
        self.enabled = enabled
        if enabled and sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit="step", dynamic_ncols=True)

    def step(self, loss: float) -> None:
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(loss=f"{loss:.3f}", refresh=False)

    def evaluated(self, row: dict[str, float], total: int) -> None:
        if not self.enabled:
            return
        text = (f"step {int(row['step'])}/{total} epoch {row['epoch']:.2f} test_acc {row['test_acc']:.4f} "
                f"test_loss {row['test_loss']:.4f} rounds {int(row['rounds'])} "
                f"up {row['bytes_up'] / 1e6:.1f} MB")
        if self.bar is not None:
            self.bar.write(f"edgempi: {text}", file=sys.stderr)
        else:
            print(f"edgempi: {text}", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def train(setup: Setup, comm: Comm, recorder: Recorder | NullRecorder | None = None,
          loader: Iterable[tuple[torch.Tensor, torch.Tensor]] | None = None, progress: bool = False) -> Outcome:
    """Run the configured method to the end; rank 0 records, every rank computes."""
    cfg, flat = setup.cfg, setup.flat
    recorder = recorder or NullRecorder()
    policy = algorithms.create(algorithms.Context(cfg, comm, flat, setup.steps_per_epoch))
    comm.broadcast_(flat.storage)  # one starting model, whatever each rank's RNG did
    model, optimizer, total = flat.model, setup.optimizer, setup.total_steps
    test_part = test_shard(len(setup.dataset.test_y), comm)
    test_x, test_y = setup.dataset.test_x[test_part], setup.dataset.test_y[test_part]
    normalize = setup.loader.normalize
    eval_every = cfg.train.eval_every or setup.steps_per_epoch
    outcome = Outcome(flat.storage)
    bar = Progress(progress and comm.rank == 0, total)
    start = time.perf_counter()
    compute_s, loss_sum, loss_count = 0.0, 0.0, 0

    def counters(step: int) -> dict[str, float]:
        ledger = comm.ledger
        means = comm.reduce_metrics([ledger.rounds, ledger.bytes_up, ledger.bytes_down, ledger.ctrl_bytes,
                                     compute_s, ledger.comm_s]) / comm.size
        (sim_s,) = comm.reduce_metrics([compute_s + ledger.sim_comm_s], op="max")
        keys = ("rounds", "bytes_up", "bytes_down", "ctrl_bytes", "compute_s", "comm_s")
        return {"step": step, "epoch": step / setup.steps_per_epoch, **dict(zip(keys, means.tolist())),
                "wall_s": time.perf_counter() - start, "sim_s": sim_s}

    def record_eval(step: int) -> None:
        test_loss, test_acc = evaluate(flat, comm, test_x, test_y, normalize, average=policy.models_differ)
        row = {**counters(step), "test_loss": test_loss, "test_acc": test_acc}
        recorder.append("evals", row)
        outcome.evals.append(row)
        bar.evaluated(row, total)

    record_eval(0)
    model.train()
    batches = iter(loader or setup.loader)
    for step in range(total):
        tick = time.perf_counter()
        comm_before = comm.ledger.comm_s
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(cfg, step, setup.steps_per_epoch, total)
        x, y = next(batches)
        flat.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        policy.after_backward(step)
        optimizer.step()
        sync = policy.after_step(step)
        compute_s += time.perf_counter() - tick - (comm.ledger.comm_s - comm_before)
        loss_value = loss.item()
        if not math.isfinite(loss_value):
            raise TrainingError(f"the training loss became {loss_value} at step {step}; lower train.lr")
        loss_sum, loss_count = loss_sum + loss_value, loss_count + 1
        if sync is not None:
            recorder.append("syncs", sync)
            outcome.syncs.append(sync)
        done = step + 1
        if done % cfg.train.log_every == 0 or done == total:
            losses = comm.reduce_metrics([loss_sum, loss_count])
            row = {**counters(done), "train_loss": losses[0] / losses[1], "lr": optimizer.param_groups[0]["lr"]}
            recorder.append("steps", row)
            outcome.steps.append(row)
            loss_sum, loss_count = 0.0, 0
        if done % eval_every == 0 or done == total:
            record_eval(done)
        bar.step(loss_value)
    bar.close()
    return outcome


def tables(setup: Setup) -> dict[str, tuple[str, ...]]:
    policy = algorithms.POLICIES[setup.cfg.algorithm.name]
    return {"steps": STEP_COLUMNS, "evals": EVAL_COLUMNS, "syncs": ("step", *policy.sync_columns)}
