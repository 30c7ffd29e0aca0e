"""Cohort sampling (``algorithm.cohort``): only the sampled devices train, a cohort as large as
the population is today's run bit for bit, a member may hold less than a batch, and memory
follows the cohort, not the population (one rank; tests/mpi/test_cohort_ranks.py deals over ranks)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import self_comm, small_config

from edgempi import cohort
from edgempi.batched import BatchedSteps
from edgempi.config import from_dict
from edgempi.data import DeviceLoader
from edgempi.settings import ConfigError
from edgempi.train import Seeds, Trainer, build

CLOCKS = {"wall_s", "sim_s", "compute_s", "comm_s"}
LENET_BYTES = 61_706 * 4
FEDAVG = ["algorithm.name=fedavg", "algorithm.local_steps=3", "train.steps=9", "train.eval_every=3",
          "train.log_every=3", "parallel.devices_per_rank=4"]


def run(overrides: list[str]):
    cfg = from_dict(small_config(), overrides)
    comm = self_comm()
    setup = build(cfg, comm)
    trainer = Trainer(setup, comm)
    return setup, trainer, trainer.run(), comm


def rows(table: list[dict]) -> list[dict]:
    return [{k: v for k, v in row.items() if k not in CLOCKS} for row in table]


@pytest.mark.parametrize("extra", [
    [],  # batched steps
    ["algorithm.name=fedprox", "algorithm.mu=0.1"],  # one device after another (a per-device hook)
    ["algorithm.server_optimizer=adam", "algorithm.participation=0.5"],  # FedOpt, half of the cohort reports
], ids=["fedavg", "fedprox", "fedadam"])
def test_a_cohort_of_the_whole_population_is_the_run_without_one(extra):
    """Plain SGD keeps no state a fresh round would drop, and member d at step t draws d's batch
    of step t: the same batches, the same averages, the same bits."""
    _, _, plain, _ = run([*FEDAVG, *extra])
    _, _, sampled, _ = run([*FEDAVG, *extra, "algorithm.cohort=4"])
    assert torch.equal(plain.storage, sampled.storage)
    assert rows(plain.steps) == rows(sampled.steps) and rows(plain.evals) == rows(sampled.evals)
    assert plain.syncs == sampled.syncs and len(plain.syncs) == 3


def test_only_the_members_train(monkeypatch):
    """Every batch drawn is a member's of that round (through the loaders the slots are bound
    to), the rank holds cohort rows, and a round costs the cohort's bytes, not the population's."""
    drawn: list[tuple[int, int]] = []  # (step, device seed)
    original = DeviceLoader.batch

    def recorded(self, step):
        drawn.append((step, self.seed))
        return original(self, step)

    monkeypatch.setattr(DeviceLoader, "batch", recorded)
    setup, trainer, outcome, comm = run([*FEDAVG, "parallel.devices_per_rank=16", "algorithm.cohort=3"])
    device_of = {s: d for d, s in enumerate(Seeds.from_seed(setup.cfg.seed, 16).devices)}
    for step in range(9):
        members = cohort.draw(setup.cfg.seed, 16, 3, step // 3)
        assert sorted(device_of[s] for t, s in drawn if t == step) == members.tolist()
    everyone = {device_of[s] for _, s in drawn}
    assert 3 < len(everyone) < 16  # three rounds of three members drew more than one cohort, not all
    assert trainer.bank.count == 3 and comm.devices == 3
    assert comm.ledger.bytes_up == comm.ledger.bytes_down == 3 * 3 * LENET_BYTES  # 3 rounds × 3 devices
    assert outcome.steps[-1]["bytes_up"] == 3 * LENET_BYTES  # per device of the cohort
    assert setup.partition_counts.shape[0] == 16  # the population's partition


def test_the_draw_is_seeded_sorted_and_differs_by_round():
    first = cohort.draw(7, 1000, 10, 0)
    assert np.array_equal(first, cohort.draw(7, 1000, 10, 0)) and np.array_equal(first, np.sort(first))
    assert len(set(first.tolist())) == 10 and not np.array_equal(first, cohort.draw(7, 1000, 10, 1))
    assert np.array_equal(cohort.draw(7, 12, 12, 5), np.arange(12))


def test_a_member_smaller_than_a_batch_trains_on_its_whole_shard():
    """Quantity skew over 40 images and 8 devices leaves some with fewer than a batch of 8: with
    a cohort each trains on its shard (the batched step stacks equal sizes); without, refused."""
    small = ["data.synthetic_train=40", "data.partition=quantity", "data.skew=1.5", "train.batch_size=8",
             "parallel.devices_per_rank=8"]
    setup, trainer, outcome, _ = run([*FEDAVG, *small, "algorithm.cohort=8"])
    sizes = [len(p) for p in setup.parts]
    assert min(sizes) < 8 <= max(sizes)
    assert sorted(loader.batch_size for loader in setup.loaders) == sorted(min(8, n) for n in sizes)
    assert isinstance(trainer.local, BatchedSteps) and np.isfinite(outcome.steps[-1]["train_loss"])
    with pytest.raises(ValueError, match="min_samples"):
        run([*FEDAVG, *small])


def rss_bytes() -> int:
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines())
    return int(fields["VmRSS"].split()[0]) * 1024


def test_ten_thousand_devices_build_and_train_a_round_in_little_memory():
    """10,000 LeNet-5 devices as rows would be 2.5 GB; a cohort of 10 holds 10 rows, and the
    population costs its partition and seeds only. Measured while everything is alive."""
    before = rss_bytes()
    setup, trainer, outcome, _ = run(["algorithm.name=fedavg", "algorithm.local_steps=1", "train.steps=1",
                                      "train.batch_size=2", "data.synthetic_train=20000", "data.synthetic_test=100",
                                      "parallel.devices_per_rank=10000", "algorithm.cohort=10"])
    grown = rss_bytes() - before
    assert len(setup.parts) == 10_000 and trainer.bank.count == 10 and len(outcome.syncs) == 1
    assert grown < 400e6, f"RSS grew by {grown / 1e6:.0f} MB"


def test_cohort_is_refused_where_a_device_keeps_state():
    base = small_config(algorithm={"name": "fedavg", "local_steps": 2, "cohort": 2},
                        parallel={"devices_per_rank": 2})
    for override, words in [("algorithm.name=dynamic", "dynamic and fda"), ("algorithm.name=fda", "not used by fda"),
                            ("algorithm.name=large_batch", "not used by large_batch"),
                            ("algorithm.name=centralized", "not used by centralized"),
                            ("compression.name=topk", "compression"), ("algorithm.name=scaffold", "control variate"),
                            ("algorithm.average_buffers=false", "BatchNorm"), ("algorithm.cohort=0", "> 0")]:
        with pytest.raises(ConfigError, match=words):
            from_dict(base, [override])
    cfg = from_dict(base)
    cohort.check_world(cfg, 1)
    with pytest.raises(ConfigError, match="more than the population of 2 devices"):
        cohort.check_world(from_dict(base, ["algorithm.cohort=3"]), 1)
    with pytest.raises(ConfigError, match="does not divide over the 2 ranks"):
        cohort.check_world(from_dict(base, ["algorithm.cohort=3"]), 2)
