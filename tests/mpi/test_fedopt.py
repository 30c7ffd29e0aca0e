"""Server optimizers and FedBN in whole runs (collective; ``mpiexec -n 4 pytest --with-mpi``)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import small_config
from test_methods import run, same_on_all_ranks

from edgempi.algorithms.fedbn import shared_positions
from edgempi.comm import Comm
from edgempi.config import from_dict
from edgempi.train import Trainer, build

pytestmark = pytest.mark.mpi(min_size=2)
ROUND = ["algorithm.name=fedavg", "algorithm.local_steps=4", "data.partition=dirichlet", "data.alpha=0.3"]


def trainer(overrides: list[str]) -> Trainer:
    comm = Comm()
    return Trainer(build(from_dict(small_config(), overrides), comm), comm)


@pytest.mark.parametrize("extra", [[], ["parallel.devices_per_rank=2", "algorithm.participation=0.5"]])
def test_server_sgd_lr_one_momentum_zero_is_plain_averaging(extra):
    _, plain, _ = run([*ROUND, *extra, "train.steps=12"])
    _, sgd, _ = run([*ROUND, *extra, "train.steps=12", "algorithm.server_optimizer=sgd",
                     "algorithm.server_lr=1", "algorithm.server_momentum=0"])
    assert torch.equal(plain.storage, sgd.storage)
    assert [r["bytes_up"] for r in plain.evals] == [r["bytes_up"] for r in sgd.evals]


@pytest.mark.parametrize("method", [ROUND, ["algorithm.name=fda", "algorithm.theta=0"],
                                    ["algorithm.name=dynamic", "algorithm.delta=0"]])
def test_one_server_step_is_the_start_plus_its_move_of_the_average(method):
    """After the first average, w = w₀ + η·(w_avg − w₀) for server SGD without momentum."""
    steps = ["train.steps=4"] if method is ROUND else ["train.steps=1"]
    start = trainer([*method, *steps]).flat.params.clone()
    _, plain, _ = run([*method, *steps, "parallel.devices_per_rank=2"])
    _, half, comm = run([*method, *steps, "parallel.devices_per_rank=2", "algorithm.server_optimizer=sgd",
                         "algorithm.server_lr=0.5", "algorithm.server_momentum=0"])
    n = start.numel()
    expected = start + 0.5 * (plain.storage.view(2, -1)[0, :n] - start)
    for row in half.storage.view(2, -1):
        assert torch.allclose(row[:n], expected, atol=1e-6)
    assert not torch.allclose(expected, plain.storage.view(2, -1)[0, :n])
    assert same_on_all_ranks(comm, half.storage)


@pytest.mark.parametrize("method", [ROUND, ["algorithm.name=fda", "algorithm.theta=0.0001"],
                                    [*ROUND, "algorithm.server_bias_correction=true", "algorithm.server_eps=1e-7"]])
def test_server_state_survives_a_checkpoint(method):
    """Stop half way, restore into a fresh trainer, go on: the same weights as one run."""
    sets = [*method, "train.steps=16", "algorithm.server_optimizer=adam", "parallel.devices_per_rank=2"]
    whole = trainer(sets)
    whole.run()
    first = trainer(sets)
    first.setup.total_steps = 8
    first.run()
    assert first.policy.server.m.abs().sum() > 0
    state = first.state_dict()
    second = trainer(sets)
    second.load_state_dict(state)
    second.run()
    assert torch.equal(whole.bank.storage, second.bank.storage)
    assert second.policy.server.t == whole.policy.server.t > first.policy.server.t > 0


def test_fedbn_keeps_batchnorm_local_and_counts_only_what_is_sent():
    t = trainer([*ROUND, "train.steps=8", "model.norm=batch", "algorithm.local_bn=true",
                 "parallel.devices_per_rank=2"])
    outcome = t.run()
    shared = shared_positions(t.flat.model)
    params = t.bank.params
    local = torch.ones(params.shape[1], dtype=torch.bool)
    local[shared] = False
    rows = torch.cat([params, t.bank.storage[:, params.shape[1]:]], 1)
    gathered = torch.stack([torch.from_numpy(np.asarray(r)) for r in t.comm.allgather_object(rows.numpy())])
    gathered = gathered.view(-1, rows.shape[1])
    assert (gathered[:, :params.shape[1]][:, shared] == gathered[0, :params.shape[1]][shared]).all()
    assert not (gathered[:, :params.shape[1]][:, local] == gathered[0, :params.shape[1]][local]).all(dim=0).any()
    stats = gathered[:, params.shape[1]:]
    assert not (stats == stats[0]).all(dim=0).any()  # every running statistic differs between devices
    per_round = 4 * len(shared)
    assert outcome.evals[-1]["bytes_up"] == 2 * per_round and outcome.evals[-1]["bytes_down"] == 2 * per_round


def test_fedbn_evaluates_each_device_with_its_own_batchnorm(monkeypatch):
    t = trainer([*ROUND, "train.steps=4", "model.norm=batch", "algorithm.local_bn=true"])
    t.run()
    seen = []
    original = t.flat.model.forward

    def spy(x):
        seen.append(t.flat.storage.clone())
        return original(x)

    monkeypatch.setattr(t.flat.model, "forward", spy)
    t.record_eval(4)
    shared = shared_positions(t.flat.model)
    local = torch.ones(t.flat.numel, dtype=torch.bool)
    local[shared] = False
    evaluated = seen[0]
    assert torch.equal(evaluated[:t.flat.numel][local], t.bank.params[0][local])  # own BN weights
    assert torch.equal(evaluated[t.flat.numel:], t.bank.storage[0, t.flat.numel:])  # own statistics
