"""Collective tests of the training methods (run under ``mpiexec -n 4 pytest --with-mpi``).

Each compares whole training runs, so a wrong average, a stale gradient or a miscounted byte
shows up as a difference in parameters or ledger figures.
"""
from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch
from helpers import self_comm, small_config

from edgempi import data
from edgempi.algorithms.base import participants
from edgempi.algorithms.fedavg import FedAvg
from edgempi.comm import Comm
from edgempi.config import from_dict
from edgempi.train import Seeds, Trainer, build, device_loader

pytestmark = pytest.mark.mpi(min_size=2)
LENET = 61_706


def run(overrides: list[str], comm: Comm | None = None):
    cfg = from_dict(small_config(), overrides)
    comm = comm or Comm()
    setup = build(cfg, comm)
    return setup, Trainer(setup, comm).run(), comm


class ConcatLoader:
    """Several devices' batches joined into one: the centralized twin of a data-parallel run."""

    def __init__(self, loaders: list[data.DeviceLoader]) -> None:
        self.loaders = loaders
        self.normalize = loaders[0].normalize
        self.relabel = loaders[0].relabel

    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        images, labels = zip(*(loader.batch(step) for loader in self.loaders))
        return torch.cat(images), torch.cat(labels)


def same_on_all_ranks(comm: Comm, tensor: torch.Tensor) -> bool:
    digest = hashlib.sha256(tensor.numpy().tobytes()).hexdigest()
    return len(set(comm.allgather_object(digest))) == 1


def centralized_twin(overrides: list[str], devices: int) -> torch.Tensor:
    """Centralized SGD with batch K·b over exactly the samples the K devices drew, step by step."""
    cfg = from_dict(small_config(), overrides)
    dist_cfg = from_dict(small_config(), [o for o in overrides if not o.startswith(("algorithm.name", "train.batch"))])
    setup = build(cfg, self_comm(), dataset=None)
    seeds = Seeds.from_seed(cfg.seed, devices)
    parts = data.partition(setup.dataset.train_y.numpy(), devices, cfg.data.partition, seeds.partition)
    setup.loaders = [ConcatLoader([device_loader(dist_cfg, setup.dataset, parts, seeds, d) for d in range(devices)])]
    return Trainer(setup, self_comm()).run().storage.clone()


def test_large_batch_equals_centralized_with_k_times_the_batch():
    comm = Comm()
    _, outcome, _ = run(["train.steps=24"], comm)
    reference = centralized_twin(["train.steps=24", "algorithm.name=centralized",
                                  f"train.batch_size={8 * comm.size}"], comm.size)
    assert torch.allclose(outcome.storage, reference, rtol=1e-4, atol=1e-6), \
        float((outcome.storage - reference).abs().max())
    assert not torch.equal(reference, build(from_dict(small_config()), self_comm()).flat.storage)


def test_fedavg_one_local_step_equals_large_batch():
    _, lb, _ = run(["train.steps=20"])
    _, fa, _ = run(["train.steps=20", "algorithm.name=fedavg", "algorithm.local_steps=1"])
    assert torch.allclose(lb.storage, fa.storage, rtol=1e-4, atol=1e-6)


def test_all_ranks_identical_after_every_sync(monkeypatch):
    comm = Comm()
    verdicts = []
    original = FedAvg.after_step

    def checked(self, step):
        sync = original(self, step)
        if sync is not None:
            verdicts.append(same_on_all_ranks(comm, self.ctx.flat.storage))
        return sync

    monkeypatch.setattr(FedAvg, "after_step", checked)
    _, outcome, _ = run(["train.steps=12", "algorithm.name=fedavg", "algorithm.local_steps=3"], comm)
    assert len(verdicts) == 4 and all(verdicts)
    assert len(outcome.syncs) == 4 and [s["step"] for s in outcome.syncs] == [3, 6, 9, 12]


def test_devices_differ_between_syncs():
    comm = Comm()
    _, outcome, _ = run(["train.steps=4", "algorithm.name=fedavg", "algorithm.local_steps=3"], comm)
    assert not same_on_all_ranks(comm, outcome.storage)


def test_ledger_large_batch_lenet():
    _, outcome, comm = run(["train.steps=10"])
    assert comm.ledger.rounds == 10
    assert comm.ledger.bytes_up == comm.ledger.bytes_down == 10 * 4 * LENET
    last = outcome.steps[-1]
    assert last["rounds"] == 10 and last["bytes_up"] == 10 * 4 * LENET and last["ctrl_bytes"] == 0


def test_ledger_fedavg_counts_weights_and_bn_buffers():
    _, _, comm = run(["train.steps=12", "algorithm.name=fedavg", "algorithm.local_steps=4"])
    assert comm.ledger.rounds == 3 and comm.ledger.bytes_up == 3 * 4 * LENET
    setup, _, comm = run(["train.steps=4", "algorithm.name=fedavg", "algorithm.local_steps=2", "model.norm=batch"])
    per_sync = 4 * (setup.flat.numel + setup.flat.buffers.numel())
    assert setup.flat.buffers.numel() == 2 * (6 + 16) and comm.ledger.bytes_up == 2 * per_sync


def test_same_config_and_seed_give_identical_metrics():
    metrics = []
    for _ in range(2):
        _, outcome, _ = run(["train.steps=15", "algorithm.name=fedavg", "algorithm.local_steps=5"])
        metrics.append(([r["train_loss"] for r in outcome.steps],
                        [(r["test_loss"], r["test_acc"]) for r in outcome.evals], outcome.storage.clone()))
    assert metrics[0][0] == metrics[1][0] and metrics[0][1] == metrics[1][1]
    assert torch.equal(metrics[0][2], metrics[1][2])
    _, other, _ = run(["train.steps=15", "algorithm.name=fedavg", "algorithm.local_steps=5", "seed=4"])
    assert not torch.equal(other.storage, metrics[0][2])


def test_evaluation_reduces_over_the_whole_test_set():
    _, outcome, comm = run(["train.steps=5"])
    acc = np.array([r["test_acc"] for r in outcome.evals])
    assert len(acc) == 2 and np.all((acc >= 0) & (acc <= 1))
    assert len(set(comm.allgather_object(acc.tobytes()))) == 1


def test_sync_bn_large_batch_equals_centralized_with_k_times_the_batch():
    comm = Comm()
    common = ["train.steps=12", "model.norm=batch"]
    _, outcome, _ = run([*common, "algorithm.sync_bn=true"], comm)
    reference = centralized_twin([*common, "algorithm.name=centralized", f"train.batch_size={8 * comm.size}"],
                                 comm.size)
    assert torch.allclose(outcome.storage, reference, rtol=1e-4, atol=1e-5), \
        float((outcome.storage - reference).abs().max())
    _, local_bn, _ = run(common, comm)  # per-device statistics: a different training
    assert not torch.allclose(local_bn.storage, reference, rtol=1e-4, atol=1e-5)


def test_spatial_mode_trains_like_one_device():
    """parallel.mode: spatial on a 1×2 grid equals the unpartitioned model on one device."""
    world = Comm()
    pair = world.split(world.rank // 2)
    spatial_vgg = {"data": {"synthetic_side": 32, "synthetic_train": 128, "synthetic_test": 32},
                   "model": {"name": "spatial_vgg"},
                   "train": {"steps": 4, "batch_size": 4, "eval_every": 2, "lr": 0.005}}
    cfg = small_config(**spatial_vgg)
    spatial = from_dict(cfg, ["parallel.mode=spatial", "parallel.grid=[1, 2]", "parallel.layers=14",
                              "parallel.groups=[[0, 6], [7, 13]]"])
    setup = build(spatial, pair)
    outcome = Trainer(setup, pair).run()
    reference = from_dict(cfg, ["algorithm.name=centralized"])
    single = Trainer(build(reference, self_comm()), self_comm()).run()
    assert torch.allclose(outcome.storage, single.storage, rtol=0, atol=1e-6), \
        float((outcome.storage - single.storage).abs().max())
    assert [r["test_acc"] for r in outcome.evals] == pytest.approx([r["test_acc"] for r in single.evals], abs=1e-6)
    assert pair.ledger.rounds == 4  # the front's weight gradients, summed once per step


def test_partial_participation_averages_only_the_participants(monkeypatch):
    """FedAvg with participation 0.5 and dropouts: after each sync every device holds the mean of
    the reporting devices' models, the same mask on every rank, and only they upload."""
    comm = Comm()
    seen = []
    original = FedAvg.after_step

    def checked(self, step):
        before = comm.allgather_object(self.ctx.flat.storage.clone()) if (step + 1) % self.period == 0 else None
        sync = original(self, step)
        if sync is not None:
            mask = participants(self.settings, self.ctx.cfg.seed, comm.size, (step + 1) // self.period)
            expected = torch.stack([b for b, m in zip(before, mask) if m]).mean(0) if mask.any() else before[comm.rank]
            seen.append((mask.tolist(), sync["participants"],
                         torch.allclose(self.ctx.flat.storage, expected, atol=1e-6),
                         same_on_all_ranks(comm, self.ctx.flat.storage) or not mask.any()))
        return sync

    monkeypatch.setattr(FedAvg, "after_step", checked)
    _, outcome, _ = run(["train.steps=24", "algorithm.name=fedavg", "algorithm.local_steps=3",
                         "algorithm.participation=0.5", "algorithm.dropout=0.2"], comm)
    masks = [m for m, *_ in seen]
    assert len(seen) == 8 and all(ok and same for _, _, ok, same in seen)
    assert all(n == sum(m) for m, n, _, _ in seen) and all(sum(m) <= comm.size // 2 for m in masks)
    assert len({tuple(m) for m in masks}) > 1  # a new draw each round
    assert len(set(comm.allgather_object(str(masks)))) == 1
    uploads = sum(m[comm.rank] for m in masks if any(m))
    assert comm.ledger.bytes_up == uploads * 4 * LENET
    assert comm.ledger.bytes_down == sum(any(m) for m in masks) * 4 * LENET


def test_simulated_time_follows_the_network_model():
    """sim_s adds, per exchange, the slowest device's transfer on its modelled link (compute
    fixed by step_ms, so the gap holds however loaded the machine is)."""
    _, lan, _ = run(["train.steps=10", "network.preset=lan", "network.step_ms=20"])
    _, slow, _ = run(["train.steps=10", "network.preset=3g", "network.step_ms=20"])
    up, down, latency = 1e6 / 8, 3e6 / 8, 0.1  # the 3g preset, bytes/s and seconds
    per_step = 2 * latency + 4 * LENET / up + 4 * LENET / down
    gap = slow.steps[-1]["sim_s"] - lan.steps[-1]["sim_s"]
    assert abs(gap - 10 * per_step) < 0.05 * 10 * per_step, (gap, 10 * per_step)
    _, spread, _ = run(["train.steps=10", "network.preset=3g", "network.spread=0.5", "network.step_ms=20"])
    assert spread.steps[-1]["sim_s"] > slow.steps[-1]["sim_s"]  # the slowest of the drawn links paces


@pytest.mark.parametrize("method", [["algorithm.name=fda", "algorithm.theta=0"],
                                    ["algorithm.name=dynamic", "algorithm.delta=0", "algorithm.check_every=2"]])
def test_partial_participation_in_the_conditional_methods(method):
    comm = Comm()
    setup, outcome, _ = run(["train.steps=12", *method, "algorithm.participation=0.5"], comm)
    masks = [participants(setup.cfg.algorithm, setup.cfg.seed, comm.size, r + 1) for r in range(len(outcome.syncs))]
    assert len(outcome.syncs) >= 6 and all(m.sum() == comm.size // 2 for m in masks)
    assert comm.ledger.bytes_up == sum(int(m[comm.rank]) for m in masks) * 4 * LENET
    assert comm.ledger.bytes_down == len(masks) * 4 * LENET
