"""Cohort sampling over ranks: the cohort is dealt to the ranks in balance, the whole population
as a cohort is today's run bit for bit, and every rank holds the same global model after a round."""
from __future__ import annotations

import pytest
import torch
from helpers import small_config
from test_methods import same_on_all_ranks

from edgempi import cohort
from edgempi.comm import Comm
from edgempi.config import from_dict
from edgempi.train import Trainer, build

pytestmark = pytest.mark.mpi(min_size=2)
FEDAVG = ["algorithm.name=fedavg", "algorithm.local_steps=2", "train.steps=6", "train.eval_every=2",
          "train.log_every=2", "parallel.devices_per_rank=3"]
CLOCKS = {"wall_s", "sim_s", "compute_s", "comm_s"}


def run(overrides: list[str], trainer_too: bool = False):
    cfg = from_dict(small_config(), overrides)
    comm = Comm()
    setup = build(cfg, comm)
    trainer = Trainer(setup, comm)
    outcome = trainer.run()
    return (setup, outcome, comm, trainer) if trainer_too else (setup, outcome, comm)


@pytest.mark.parametrize("extra", [[], ["algorithm.name=scaffold", "algorithm.participation=0.5"]],
                         ids=["fedavg", "scaffold"])
def test_the_whole_population_as_a_cohort_over_ranks_is_the_run_without_one(extra):
    _, plain, comm = run([*FEDAVG, *extra])
    _, sampled, _ = run([*FEDAVG, *extra, f"algorithm.cohort={3 * comm.size}"])
    assert torch.equal(plain.storage, sampled.storage)
    for a, b in ((plain.steps, sampled.steps), (plain.evals, sampled.evals)):
        assert [{k: v for k, v in r.items() if k not in CLOCKS} for r in a] == \
               [{k: v for k, v in r.items() if k not in CLOCKS} for r in b]


def test_the_cohort_is_dealt_over_the_ranks_and_ends_each_round_agreed():
    comm = Comm()
    size = 2 * comm.size
    setup, outcome, comm = run([*FEDAVG, f"algorithm.cohort={size}"])
    members = cohort.draw(setup.cfg.seed, 3 * comm.size, size, 2)  # the last round's
    agreed = same_on_all_ranks(comm, outcome.storage[0].clone())  # collective first: a failed assert can't hang
    held = comm.allgather_object(setup.cohort.devices.tolist())
    assert sum(held, []) == members.tolist() and agreed
    assert comm.devices == size and len(setup.loaders) == 2 and len(outcome.syncs) == 3


def test_scaffold_variates_travel_with_their_devices_over_the_ranks():
    """A cohort of 2 a rank from 3 a rank over 3 rounds: devices train on other ranks in later
    rounds, yet each sampled device's cᵢ is kept on exactly one rank, no other device has one,
    and c = Σᵢ cᵢ / N still holds (a cᵢ lost or doubled on the way would break it)."""
    comm = Comm()
    size = 2 * comm.size
    setup, _, comm, trainer = run([*FEDAVG, "algorithm.name=scaffold", f"algorithm.cohort={size}"], trainer_too=True)
    policy = trainer.policy
    draws = [cohort.draw(setup.cfg.seed, 3 * comm.size, size, r).tolist() for r in range(3)]
    rank_of = [{d: j // 2 for j, d in enumerate(members)} for members in draws]
    moved = any(d in later and later[d] != earlier[d] for i, earlier in enumerate(rank_of)
                for later in rank_of[i + 1:] for d in earlier)
    mine = {**policy.store.rows, **dict(zip(policy.holders.tolist(), policy.c_local))}
    total = torch.stack(list(mine.values())).sum(0)
    comm.allreduce_sum_(total)  # collectives first: a failed assert can't hang
    held = comm.allgather_object(sorted(mine))
    assert moved and sorted(sum(held, [])) == sorted({d for members in draws for d in members})
    assert torch.allclose(policy.c, total / (3 * comm.size), atol=1e-6) and policy.c.abs().sum() > 0
