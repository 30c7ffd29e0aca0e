"""The one FedAvg workload that edgempi and Flower both run, built from one config.

edgempi gets it as a command line (``edgempi run fedavg.yaml --set ...``, the public CLI, so
whatever makes edgempi faster is measured as it lands). Flower's client and server get it as a
:class:`Workload`: the same config object, read with the same overrides, and edgempi's own
partition, per-device batch order, model constructor and initial weights, so both engines train
the same devices on the same batches from the same start and must reach the same accuracy.
This module does not import Flower: a test checks the workload without it.
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from edgempi import config, models, optim
from edgempi.config import ConfigError, RunConfig
from edgempi.data import Dataset, DeviceLoader
from edgempi.train import Seeds, device_loader, load_dataset, make_partition

CONFIG = Path(__file__).resolve().with_name("fedavg.yaml")
RANKS = 2  # edgempi's MPI ranks: one per core of the project's machines, as Flower gets one actor per core


def overrides(devices: int, rounds: int, ranks: int = RANKS) -> list[str]:
    """The ``--set`` values that size the workload: ``devices`` as ``ranks`` × devices per rank,
    ``rounds`` rounds, one /steps row per round and one evaluation, at the end."""
    if devices < ranks or devices % ranks:
        raise ConfigError("devices", f"{devices} devices cannot be split evenly over {ranks} ranks")
    if rounds < 1:
        raise ConfigError("rounds", f"must be >= 1, got {rounds}")
    local = config.load(CONFIG).algorithm.local_steps
    return [f"parallel.devices_per_rank={devices // ranks}", f"train.steps={rounds * local}",
            f"train.log_every={local}", f"train.eval_every={rounds * local}"]


def workload_config(devices: int, rounds: int) -> RunConfig:
    """The config both engines run, as edgempi reads it from :func:`edgempi_command`."""
    return config.load(CONFIG, overrides(devices, rounds))


def edgempi_command(devices: int, rounds: int, out: Path, mpiexec: str = "mpiexec") -> list[str]:
    """The command line of edgempi's side: ``mpiexec -n 2 python -m edgempi run ...``."""
    sets = [arg for value in overrides(devices, rounds) for arg in ("--set", value)]
    return [mpiexec, "-n", str(RANKS), sys.executable, "-m", "edgempi", "run", str(CONFIG), "--out", str(out),
            "--overwrite", "--set", f"output.name=peers-{devices}", *sets]


class Workload:
    """What a Flower client and server need: edgempi's data, shards, batches and model.

    Device ``d`` in round ``r`` (from 1) trains on the batches edgempi's device ``d`` draws at
    steps (r − 1)·L … r·L − 1, with a fresh SGD optimizer (plain SGD keeps no state between rounds).
    """

    def __init__(self, devices: int, rounds: int, dataset: Dataset | None = None) -> None:
        self.cfg = workload_config(devices, rounds)
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

    def loader(self, device: int) -> DeviceLoader:
        if device not in self.loaders:
            self.loaders[device] = device_loader(self.cfg, self.dataset, self.parts, self.seeds, device)
        return self.loaders[device]

    def fit(self, model: nn.Module, device: int, round_index: int) -> float:
        """One round of device ``device`` on ``model`` in place; returns its mean training loss.
        The optimizer is edgempi's (torch's SGD without the seconds of ``torch._dynamo`` import),
        so that neither engine's start-up is charged for it."""
        t, loader = self.cfg.train, self.loader(device)
        optimizer = optim.SGD(model.parameters(), lr=t.lr, momentum=t.momentum, weight_decay=t.weight_decay)
        model.train()
        losses = []
        for step in range((round_index - 1) * self.local_steps, round_index * self.local_steps):
            x, y = loader.batch(step)
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
