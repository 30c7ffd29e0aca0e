"""The bucketed gradient Allreduce of ``large_batch`` (started during backward) against the one
Allreduce after backward: the same weights bit for bit, the same ledger (run under
``mpiexec -n 2 pytest --with-mpi``; at two ranks every element is one addition, so any
segmentation must give the same bits)."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from helpers import small_config
from torch import nn

from edgempi import algorithms
from edgempi.algorithms.buckets import GradientBuckets, bucket_bounds
from edgempi.comm import Comm
from edgempi.config import from_dict
from edgempi.flat import FlatModel
from edgempi.train import Trainer, build

pytestmark = pytest.mark.mpi(min_size=2)

def run(overrides: list[str]):
    cfg = from_dict(small_config(), overrides)
    comm = Comm()
    setup = build(cfg, comm)
    return setup, Trainer(setup, comm).run(), comm


@pytest.mark.parametrize("extra", [[], ["model.norm=batch", "train.momentum=0.9", "train.weight_decay=1e-3"]],
                         ids=["plain", "bn_momentum"])
def test_buckets_give_the_single_allreduce_bit_for_bit(extra):
    steps = ["train.steps=12", *extra]
    setup, bucketed, comm = run([*steps, "algorithm.bucket_mb=0.005"])  # LeNet-5 in 4 or more buckets
    _, single, single_comm = run([*steps, "algorithm.bucket_mb=0"])
    assert len(bucket_bounds([math.prod(s) for s in setup.flat.shapes], 1310)[0]) >= 4
    assert torch.equal(bucketed.storage, single.storage)
    assert comm.ledger.rounds == single_comm.ledger.rounds == 12
    assert comm.ledger.bytes_up == single_comm.ledger.bytes_up == 12 * 4 * setup.flat.numel
    assert comm.ledger.bytes_down == single_comm.ledger.bytes_down
    assert [r["train_loss"] for r in bucketed.steps] == [r["train_loss"] for r in single.steps]
    counted = [[(r["rounds"], r["bytes_up"]) for r in outcome.steps] for outcome in (bucketed, single)]
    assert counted[0] == counted[1]


def policy_for(overrides: list[str]) -> algorithms.Policy:
    cfg = from_dict(small_config(), overrides)
    setup = build(cfg, Comm())
    return algorithms.policy_class("large_batch")(algorithms.Context(
        cfg, setup.peers, setup.flat, setup.steps_per_epoch, setup.optimizer, None, setup.mode.group_reduce,
        setup.clock))


def test_buckets_start_during_backward_and_only_where_they_can():
    policy = policy_for(["algorithm.bucket_mb=0.005"])
    flat, buckets = policy.ctx.flat, policy.buckets
    x, y = torch.randn(8, 1, 28, 28), torch.randint(10, (8,))
    flat.zero_grad()
    F.cross_entropy(flat.model(x), y).backward()
    assert buckets.started == len(buckets.bounds)  # every bucket left during backward
    with pytest.raises(RuntimeError, match="second backward"):  # it would add into buckets on the wire
        F.cross_entropy(flat.model(x), y).backward()
    assert policy.after_backward(0) and buckets.started == 0
    for off in (["algorithm.bucket_mb=0"], ["algorithm.bucket_mb=1"],  # LeNet-5's 241 KiB fit one bucket
                ["compression.name=fp16"], ["model.norm=batch", "algorithm.sync_bn=true"],
                ["network.step_ms=10", "network.deadline_s=1"]):
        assert policy_for(off).buckets is None, off


class PartlyUsed(nn.Module):
    """A model whose middle layer gets no gradient: its bucket must still be exchanged."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.unused, self.b = nn.Linear(6, 40), nn.Linear(40, 40), nn.Linear(40, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(torch.relu(self.a(x)))


def rank_model() -> FlatModel:
    torch.manual_seed(Comm().rank)  # every rank its own weights, so its own gradient
    return FlatModel(PartlyUsed())


def test_a_parameter_without_gradient_and_every_rank_holding_the_mean():
    comm, x = Comm(), torch.randn(5, 6)
    flat, twin = rank_model(), rank_model()
    buckets = GradientBuckets(flat, comm, 4 * 40 / 2**20)  # about one Linear's bias per bucket
    for model in (flat, twin):
        model.zero_grad()
        model.model(x).square().sum().backward()
    assert 0 < buckets.started < len(buckets.bounds)  # the unused layer's buckets wait for finish
    assert buckets.finish() == comm.size
    assert comm.ledger.rounds == 1 and comm.ledger.bytes_up == comm.ledger.bytes_down == 4 * flat.numel
    Comm().allreduce_mean_(twin.grads)
    assert torch.equal(flat.grads, twin.grads)
