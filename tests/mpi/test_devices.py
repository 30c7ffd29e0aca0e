"""Many devices per rank (``parallel.devices_per_rank``): K devices as M × ranks are K ranks.

Under ``mpiexec -n 4`` the same 4-device run is made three ways: 4 ranks of 1 device, 2 ranks of
2 (each half of the world on its own), and 1 rank of 4. Every device must end with the same
weights, and every recorded figure (losses, accuracy, rounds, bytes, and the simulated clock,
modelled with ``network.step_ms`` so it is exact) must agree.
"""
from __future__ import annotations

import pytest
import torch
from helpers import self_comm
from test_methods import LENET, run, same_on_all_ranks

from edgempi.algorithms.large_batch import LargeBatch
from edgempi.comm import Comm
from edgempi.sim import Deadline, Jitter, device_links
from edgempi.train import Seeds, build

pytestmark = pytest.mark.mpi(min_size=4)
EXACT = ("step", "rounds", "bytes_up", "bytes_down", "ctrl_bytes")
CLOSE = ("train_loss", "test_loss", "test_acc", "sim_s")
COMMON = ["train.steps=12", "train.log_every=3", "train.eval_every=6", "data.partition=dirichlet",
          "data.alpha=0.5", "network.preset=4g", "network.spread=0.5", "network.step_ms=20",
          "network.compute_spread=0.5"]
METHODS = {
    "large_batch": ["algorithm.name=large_batch", "train.momentum=0.9"],
    "large_batch_bn": ["algorithm.name=large_batch", "model.norm=batch"],  # each device scores its own model
    "fedavg_local_stats": ["algorithm.name=fedavg", "algorithm.local_steps=3", "model.norm=batch",
                           "algorithm.average_buffers=false", "algorithm.eval_stats=local"],
    "fedavg_dropout": ["algorithm.name=fedavg", "algorithm.local_steps=2", "model.name=fda_cnn", "train.steps=6"],
    "fedavg_bn_adam": ["algorithm.name=fedavg", "algorithm.local_steps=3", "model.norm=batch",
                       "train.optimizer=adam", "train.lr=0.002", "algorithm.participation=0.75",
                       "algorithm.dropout=0.2"],
    "dynamic": ["algorithm.name=dynamic", "algorithm.delta=0.05", "algorithm.check_every=2", "train.momentum=0.5"],
    "dynamic_balancing": ["algorithm.name=dynamic", "algorithm.delta=0.05", "algorithm.check_every=2",
                          "algorithm.balancing=true"],
    "fda_linear": ["algorithm.name=fda", "algorithm.variant=linear", "algorithm.theta_per_param=1e-6"],
    "fda_sketch": ["algorithm.name=fda", "algorithm.variant=sketch", "algorithm.theta_per_param=1e-6"],
    "fedprox": ["algorithm.name=fedprox", "algorithm.local_steps=3", "algorithm.mu=0.1",
                "algorithm.participation=0.75"],
    "scaffold": ["algorithm.name=scaffold", "algorithm.local_steps=3", "algorithm.participation=0.75",
                 "algorithm.dropout=0.2"],
    "fedavg_deadline": ["algorithm.name=fedavg", "algorithm.local_steps=2", "network.deadline_s=0.3"],
    "large_batch_deadline": ["algorithm.name=large_batch", "network.deadline_s=0.2"],
    "fedavg_deadline_jitter": ["algorithm.name=fedavg", "algorithm.local_steps=2", "network.deadline_s=0.3",
                               "network.jitter=0.5"],  # each device's draw follows it to whatever rank holds it
}


def devices_run(overrides: list[str], comm: Comm, per_rank: int):
    """The run on ``comm`` with ``per_rank`` devices per rank: its outcome and every device's weights."""
    setup, outcome, comm = run([*COMMON, *overrides, f"parallel.devices_per_rank={per_rank}"], comm)
    rows = outcome.storage.view(per_rank, -1)
    weights = torch.cat([torch.as_tensor(r) for r in comm.allgather_object(rows.clone())])
    return outcome, weights, comm


@pytest.mark.parametrize("method", METHODS, ids=str)
def test_devices_per_rank_equal_as_many_ranks(method):
    world = Comm()
    if world.size != 4:
        pytest.skip("compares against exactly 4 ranks")
    ranks, ranks_w, _ = devices_run(METHODS[method], world, 1)
    halves, halves_w, half = devices_run(METHODS[method], world.split(world.rank // 2), 2)
    single, single_w, _ = devices_run(METHODS[method], self_comm(), 4)
    assert half.size == 2 and half.local == 2
    for other, weights in ((halves, halves_w), (single, single_w)):
        # Sums in another order: 1e-7 differences, grown by training to at most 7e-5 (fda_cnn);
        # a device with another's optimizer state or random stream is off by more than 2e-3.
        assert torch.allclose(weights, ranks_w, rtol=1e-4, atol=2e-4), float((weights - ranks_w).abs().max())
        assert_same_rows(other, ranks, syncs_rel=1e-6, rel=1e-4)
    assert ranks.steps[-1]["bytes_up"] > 0


def test_stragglers_miss_the_deadline_and_the_rest_are_averaged():
    """With modelled step times every rank knows who is late; late devices upload nothing, the
    others' mean is what every device gets, and the simulated round stops at the deadline."""
    comm = Comm()
    overrides = ["train.steps=12", "network.preset=4g", "network.spread=0.7", "network.step_ms=20"]
    cut = ["algorithm.name=fedavg", "algorithm.local_steps=2", "network.deadline_s=0.3", *overrides]
    setup, outcome, _ = run(cut, comm)
    links = device_links(setup.cfg.network, Seeds.from_seed(setup.cfg.seed, comm.size).network, comm.size)
    on_time = Deadline(0.3, links).on_time(2, 4 * LENET)
    assert 0 < on_time.sum() < comm.size  # the draw has stragglers and reporters
    assert [s["participants"] for s in outcome.syncs] == [int(on_time.sum())] * 6
    assert comm.ledger.bytes_up == 6 * 4 * LENET * int(on_time[comm.rank])
    assert comm.ledger.bytes_down == 6 * 4 * LENET
    assert same_on_all_ranks(comm, outcome.storage)
    waits = max(min(2 * 0.02 * link.compute_factor + link.upload_s(4 * LENET), 0.3) + link.download_s(4 * LENET)
                for link in links)
    assert outcome.steps[-1]["sim_s"] == pytest.approx(6 * waits, rel=1e-9)

    _, everyone, _ = run(["algorithm.name=fedavg", "algorithm.local_steps=2", *overrides], comm)
    assert everyone.steps[-1]["sim_s"] > outcome.steps[-1]["sim_s"]


def test_jitter_draws_new_stragglers_every_round():
    """With ``network.jitter`` a device's round takes a fresh factor as long each exchange, so
    who misses the deadline changes from round to round, and sim_s follows exactly."""
    comm = Comm()
    overrides = ["train.steps=12", "network.preset=4g", "network.spread=0.3", "network.step_ms=20",
                 "network.jitter=0.8", "algorithm.name=fedavg", "algorithm.local_steps=2"]
    setup, outcome, _ = run([*overrides, "network.deadline_s=0.3"], comm)
    seed = Seeds.from_seed(setup.cfg.seed, comm.size).network
    links, jitter = device_links(setup.cfg.network, seed, comm.size), Jitter(0.8, seed, comm.size)
    on_time = [Deadline(0.3, links).on_time(2, 4 * LENET, jitter.factors(r)) for r in range(6)]
    assert len({tuple(m) for m in on_time}) > 1  # the stragglers are not the same devices every round
    assert [s["participants"] for s in outcome.syncs] == [int(m.sum()) for m in on_time]
    assert comm.ledger.bytes_up == 4 * LENET * sum(int(m[comm.rank]) for m in on_time)
    assert same_on_all_ranks(comm, outcome.storage)
    waits = [max(min(f * (2 * 0.02 * link.compute_factor + link.upload_s(4 * LENET)), 0.3)
                 + f * link.download_s(4 * LENET) for link, f in zip(links, jitter.factors(r))) for r in range(6)]
    assert outcome.steps[-1]["sim_s"] == pytest.approx(sum(waits), rel=1e-9)

    _, steady, _ = run([*overrides[:4], *overrides[5:], "network.deadline_s=0.3"], comm)  # no jitter
    assert len({s["participants"] for s in steady.syncs}) == 1


def test_large_batch_averages_the_gradients_of_the_devices_that_reported():
    comm = Comm()
    overrides = ["train.steps=6", "network.preset=4g", "network.spread=0.7", "network.step_ms=20",
                 "network.deadline_s=0.2"]
    seen = []
    original = LargeBatch.after_backward

    def checked(self, step):
        grads = torch.stack(comm.allgather_object(self.ctx.flat.grads.clone()))
        mask = torch.from_numpy(self.ctx.clock.on_time(4 * LENET))
        applied = original(self, step)
        seen.append((int(mask.sum()), torch.allclose(self.ctx.flat.grads, grads[mask].mean(0), atol=1e-7)))
        return applied

    LargeBatch.after_backward = checked
    try:
        run(overrides, comm)
    finally:
        LargeBatch.after_backward = original
    assert all(ok for _, ok in seen) and 0 < seen[0][0] < comm.size, seen


@pytest.mark.parametrize("method", [["algorithm.name=large_batch", "train.momentum=0.9"],
                                    ["algorithm.name=fedavg", "algorithm.local_steps=2"]],
                         ids=["large_batch", "fedavg"])
def test_a_round_nobody_makes_changes_nothing_but_the_clock(method):
    """A deadline below the link latency: no device reports and no byte moves; Large Batch
    never steps, FedAvg's devices keep their local models; every round costs exactly the
    deadline (the server waited for nobody)."""
    comm = Comm()
    setup, outcome, _ = run(["train.steps=6", "network.preset=4g", "network.step_ms=20", "network.deadline_s=0.01",
                             *method], comm)
    large_batch = "algorithm.name=large_batch" in method
    start = build(setup.cfg, self_comm()).flat.storage
    assert torch.equal(outcome.storage, start) == large_batch
    assert comm.ledger.rounds == comm.ledger.bytes_up == comm.ledger.bytes_down == 0
    rounds = 6 if large_batch else 3
    assert outcome.steps[-1]["sim_s"] == pytest.approx(rounds * 0.01, rel=1e-9)
    assert all(s["participants"] == 0 for s in outcome.syncs)


def assert_same_rows(mine_run, their_run, syncs_rel: float, rel: float) -> None:
    """Two runs' /syncs, /steps and /evals rows: counters exact, measured values to ``rel``."""
    assert [s["step"] for s in mine_run.syncs] == [s["step"] for s in their_run.syncs]
    assert [pytest.approx(s, rel=syncs_rel) for s in mine_run.syncs] == their_run.syncs
    for table in ("steps", "evals"):
        for mine, theirs in zip(getattr(mine_run, table), getattr(their_run, table), strict=True):
            assert all(mine[k] == theirs[k] for k in EXACT if k in mine), (table, mine, theirs)
            assert all(mine[k] == pytest.approx(theirs[k], rel=rel, abs=1e-6) for k in CLOSE if k in mine), \
                (table, mine, theirs)
