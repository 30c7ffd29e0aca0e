"""The one FedAvg workload that edgempi, Flower and pfl-research all run, built from one config.

edgempi gets it as a command line (``edgempi run fedavg.yaml --set ...``, the public CLI, so
whatever makes edgempi faster is measured as it lands). Flower's client and server and pfl's
users get it as a :class:`Workload`: the same config object, read with the same overrides, and
edgempi's own partition, per-device batch order, model constructor, initial weights and cohorts,
so every engine trains the same devices on the same batches from the same start and must reach
the same accuracy. This module imports neither Flower nor pfl: a test checks the workload without them.

A cohort of C of the P devices per round is edgempi's ``algorithm.cohort = C``: each round C
devices are drawn (edgempi/cohort.py ``draw``) and only they train, each from the global model with
no optimizer state, on the batches its own loader draws at that round's steps; Flower and pfl are
told the same draw and train the same C on the same batches, so the accuracy agrees and every
engine does the same work.
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from edgempi import cohort, config, models
from edgempi.config import ConfigError, RunConfig
from edgempi.data import Dataset, DeviceLoader
from edgempi.train import Seeds, device_loader, load_dataset, make_partition
from edgempi.util import optim

CONFIG = Path(__file__).resolve().with_name("fedavg.yaml")
RANKS = 2  # edgempi's MPI ranks: one per core of the project's machines, as Flower gets one actor per core
TRAIN_IMAGES = 60_000  # Fashion-MNIST's training set, split evenly (IID) over the devices


def epoch_steps(devices: int) -> int:
    """One local epoch over an IID shard of ``devices``: its full batches of 32, or one batch of
    the whole shard when it holds fewer (a cohort's member trains on its shard as its batch)."""
    return max(1, TRAIN_IMAGES // devices // config.load(CONFIG).train.batch_size)


def overrides(devices: int, rounds: int, ranks: int = RANKS, cohort: int | None = None,
              local_steps: int | None = None) -> list[str]:
    """The ``--set`` values that size the workload: ``devices`` as ``ranks`` × devices per rank,
    ``rounds`` rounds of one local epoch each (or ``local_steps`` steps), one /steps row per round
    and one evaluation, at the end; a ``cohort`` below ``devices`` as edgempi's cohort sampling
    (only that many train each round)."""
    if devices < ranks or devices % ranks:
        raise ConfigError("devices", f"{devices} devices cannot be split evenly over {ranks} ranks")
    if rounds < 1:
        raise ConfigError("rounds", f"must be >= 1, got {rounds}")
    cohort = devices if cohort is None else cohort
    if not 1 <= cohort <= devices:
        raise ConfigError("cohort", f"must be in [1, {devices}] (the devices), got {cohort}")
    local = local_steps or epoch_steps(devices)
    sets = [f"parallel.devices_per_rank={devices // ranks}", f"algorithm.local_steps={local}",
            f"train.steps={rounds * local}",
            f"train.log_every={local}", f"train.eval_every={rounds * local}"]
    return sets + ([f"algorithm.cohort={cohort}"] if cohort < devices else [])


def workload_config(devices: int, rounds: int, cohort: int | None = None, local_steps: int | None = None) -> RunConfig:
    """The config every engine runs, as edgempi reads it from :func:`edgempi_command`."""
    return config.load(CONFIG, overrides(devices, rounds, cohort=cohort, local_steps=local_steps))


def edgempi_command(devices: int, rounds: int, out: Path, mpiexec: str = "mpiexec",
                    cohort: int | None = None) -> list[str]:
    """The command line of edgempi's side: ``mpiexec -n 2 python -m edgempi run ...``."""
    sets = [arg for value in overrides(devices, rounds, cohort=cohort) for arg in ("--set", value)]
    return [mpiexec, "-n", str(RANKS), sys.executable, "-m", "edgempi", "run", str(CONFIG), "--out", str(out),
            "--overwrite", "--set", f"output.name=peers-{devices}", *sets]


class Workload:
    """What a Flower client and server and pfl's users need: edgempi's data, shards, batches,
    model and cohorts.

    Device ``d`` in round ``r`` (from 1) trains on the batches edgempi's device ``d`` draws at
    steps (r − 1)·L … r·L − 1, with a fresh SGD optimizer (plain SGD keeps no state between rounds).
    """

    def __init__(self, devices: int, rounds: int, dataset: Dataset | None = None, cohort: int | None = None,
                 local_steps: int | None = None) -> None:
        self.cfg = workload_config(devices, rounds, cohort, local_steps)
        self.devices = devices
        self.dataset = dataset or load_dataset(self.cfg)
        self.seeds = Seeds.from_seed(self.cfg.seed, devices)
        self.parts = make_partition(self.cfg, self.dataset, self.seeds)
        self.local_steps: int = self.cfg.algorithm.local_steps
        self.loaders: dict[int, DeviceLoader] = {}

    def initial_model(self) -> nn.Module:
        """The model edgempi starts every device from (same seed, same constructor)."""
        torch.manual_seed(self.seeds.init)
        d = self.dataset
        return models.create(self.cfg.model.name, num_classes=d.num_classes, in_channels=d.in_channels,
                             input_size=d.input_size, norm=self.cfg.model.norm)

    def cohort(self, round_index: int) -> list[int]:
        """The devices whose models round ``round_index`` (from 1) averages: edgempi's draw."""
        size = cohort.size(self.cfg)
        if size is None:
            return list(range(self.devices))
        return cohort.draw(self.cfg.seed, self.devices, size, round_index - 1).tolist()

    def round_batches(self, device: int, round_index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Every batch :meth:`fit` trains ``device`` on in round ``round_index``, concatenated in
        order: one pass over them in batches of the workload's size is that round."""
        loader = self.loader(device)
        batches = [loader.batch(step) for step in range((round_index - 1) * self.local_steps,
                                                         round_index * self.local_steps)]
        return torch.cat([x for x, _ in batches]), torch.cat([y for _, y in batches])

    @property
    def batch_size(self) -> int:
        """The one batch size of pfl's users: every device's, which the IID split makes equal
        (32, or a cohort member's whole shard when it holds fewer)."""
        if len({len(p) for p in self.parts}) > 1:
            raise ValueError("the shards differ in size, so do their batches: pfl takes one batch size")
        return self.loader(0).batch_size

    def loader(self, device: int) -> DeviceLoader:
        if device not in self.loaders:
            self.loaders[device] = device_loader(self.cfg, self.dataset, self.parts, self.seeds, device)
        return self.loaders[device]

    def fit(self, model: nn.Module, device: int, round_index: int) -> float:
        """One round of device ``device`` on ``model`` in place, in edgempi's batches; returns its mean training loss.
        The optimizer is edgempi's (torch's SGD without the seconds of ``torch._dynamo`` import),
        so that neither engine's start-up is charged for it."""
        t = self.cfg.train
        optimizer = optim.SGD(model.parameters(), lr=t.lr, momentum=t.momentum, weight_decay=t.weight_decay)
        model.train()
        losses = []
        xs, ys = self.round_batches(device, round_index)
        batch = self.loader(device).batch_size  # edgempi's: 32, or a cohort member's whole smaller shard
        for x, y in zip(xs.split(batch), ys.split(batch)):
            optimizer.zero_grad()
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        return sum(losses) / len(losses)

    @torch.no_grad()
    def accuracy(self, model: nn.Module, batch_size: int = 1000) -> float:
        """Test accuracy on the whole test set, normalised as edgempi's evaluation does."""
        model.eval()
        x_all, y_all, normalize = self.dataset.test_x, self.dataset.test_y, self.loader(0).normalize
        correct = sum(int((model(normalize(x_all[i:i + batch_size])).argmax(1) == y_all[i:i + batch_size]).sum())
                      for i in range(0, len(y_all), batch_size))
        return correct / len(y_all)
