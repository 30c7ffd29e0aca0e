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
from edgempi.algorithms.base import participants
from edgempi.batched import BatchedSteps
from edgempi.checkpoint import Checkpointer, load_rank_state, read_meta
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
    ["algorithm.name=scaffold", "algorithm.participation=0.5"],  # control variates, swapped in each round
], ids=["fedavg", "fedprox", "fedadam", "scaffold"])
def test_a_cohort_of_the_whole_population_is_the_run_without_one(extra):
    """Plain SGD keeps no state a fresh round would drop, and member d at step t draws d's batch
    of step t: the same batches, the same averages, the same bits."""
    _, _, plain, _ = run([*FEDAVG, *extra])
    _, _, sampled, _ = run([*FEDAVG, *extra, "algorithm.cohort=4"])
    assert torch.equal(plain.storage, sampled.storage)
    assert rows(plain.steps) == rows(sampled.steps) and rows(plain.evals) == rows(sampled.evals)
    assert plain.syncs == sampled.syncs and len(plain.syncs) == 3


def test_scaffold_keeps_the_variates_of_the_sampled_devices_only():
    """16 devices, 3 rounds of a cohort of 3 of which 2 report: the members drawn have a cᵢ, no
    other device does; the last round's are in the rows, the earlier members' in the store, each
    once (and only they go into a checkpoint); only reporters' cᵢ moved from zero. c starts at
    zero and moves by |S|/N · mean Δcᵢ, so it is Σᵢ cᵢ / N with N = 16 (|S|/C would make it 16/3
    as large)."""
    setup, trainer, _, _ = run([*FEDAVG, "algorithm.name=scaffold", "parallel.devices_per_rank=16",
                                "algorithm.cohort=3", "algorithm.participation=0.67"])
    policy, seed = trainer.policy, setup.cfg.seed
    draws = [cohort.draw(seed, 16, 3, r) for r in range(3)]
    reporters = {int(d) for r, members in enumerate(draws)
                 for d in members[participants(setup.cfg.algorithm, seed, 3, r + 1)]}
    stored = set(policy.store.rows)
    assert policy.holders.tolist() == draws[2].tolist() and not stored & set(draws[2].tolist())
    assert stored | set(draws[2].tolist()) == {int(d) for members in draws for d in members}
    variates = {**policy.store.rows, **dict(zip(policy.holders.tolist(), policy.c_local))}
    assert {d for d, c in variates.items() if c.abs().sum() > 0} == reporters and 3 < len(reporters) < len(variates)
    assert policy.state_dict()["variates"]["ids"].tolist() == sorted(stored)
    assert torch.allclose(policy.c, torch.stack(list(variates.values())).sum(0) / 16, atol=1e-6)
    assert policy.c.abs().sum() > 0


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


class Stop(Exception):
    pass


class SaveOnce(Checkpointer):
    """Saves at its first due step, then stops the run there, as a preempted job would."""

    def maybe_save(self, trainer) -> None:
        super().maybe_save(trainer)
        if (self.folder / "meta.json").exists():
            raise Stop


def test_scaffold_resumed_mid_round_from_a_checkpoint_is_the_run_uninterrupted(tmp_path):
    """One rank of 8 devices, a cohort of 4, half of it reporting: stopped after step 7, in the
    third round, and resumed from the checkpoint's file; the rows, the model, c and every
    sampled device's cᵢ are those of the run that never stopped."""
    overrides = [*FEDAVG, "algorithm.name=scaffold", "parallel.devices_per_rank=8", "algorithm.cohort=4",
                 "algorithm.participation=0.5", "train.steps=12", "train.log_every=1", "checkpoint.every_steps=7"]
    _, whole, full, _ = run(overrides)
    cfg, comm = from_dict(small_config(), overrides), self_comm()
    first = Trainer(build(cfg, comm), comm)
    with pytest.raises(Stop):
        first.run(SaveOnce(cfg, comm, tmp_path))
    state = load_rank_state(tmp_path, 0, read_meta(tmp_path, cfg, 1))
    assert state["step"] == 7 and state["policy"]["variates"]["ids"].numel() > 0
    second = Trainer(build(cfg, comm), comm)
    second.load_state_dict(state)
    rest = second.run()
    assert rows(first.outcome.steps + rest.steps) == rows(full.steps)
    assert rows(first.outcome.evals + rest.evals) == rows(full.evals)
    assert first.outcome.syncs + rest.syncs == full.syncs and torch.equal(rest.storage, full.storage)
    assert torch.equal(second.policy.c, whole.policy.c) and torch.equal(second.policy.c_local, whole.policy.c_local)
    assert second.policy.store.rows.keys() == whole.policy.store.rows.keys()
    assert all(torch.equal(row, whole.policy.store.rows[d]) for d, row in second.policy.store.rows.items())


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
                            ("compression.name=topk", "compression"),
                            ("algorithm.average_buffers=false", "BatchNorm"), ("algorithm.cohort=0", "> 0")]:
        with pytest.raises(ConfigError, match=words):
            from_dict(base, [override])
    cfg = from_dict(base)
    cohort.check_world(cfg, 1)
    assert from_dict(base, ["algorithm.name=scaffold"]).algorithm.cohort == 2  # its cᵢ are kept per sampled device
    with pytest.raises(ConfigError, match="more than the population of 2 devices"):
        cohort.check_world(from_dict(base, ["algorithm.cohort=3"]), 1)
    with pytest.raises(ConfigError, match="does not divide over the 2 ranks"):
        cohort.check_world(from_dict(base, ["algorithm.cohort=3"]), 2)
