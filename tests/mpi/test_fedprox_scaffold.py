"""FedProx and SCAFFOLD (collective; run under ``mpiexec -n 4 pytest --with-mpi``)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import small_config
from test_methods import LENET, run

from edgempi.comm import Comm
from edgempi.config import from_dict
from edgempi.train import Trainer, build

pytestmark = pytest.mark.mpi(min_size=2)
NONIID = ["train.steps=24", "algorithm.local_steps=4", "data.partition=dirichlet", "data.alpha=0.3"]


def trained(overrides: list[str]) -> Trainer:
    comm = Comm()
    trainer = Trainer(build(from_dict(small_config(), overrides), comm), comm)
    trainer.run()
    return trainer


def rows(outcome, table: str, keys=("train_loss", "test_acc", "test_loss", "rounds", "bytes_up", "bytes_down")):
    return [[r[k] for k in keys if k in r] for r in getattr(outcome, table)]


# FedProx keeps several devices per rank in the loop (its per-device hook): FedAvg on the same path.
@pytest.mark.parametrize("extra", [[], ["parallel.devices_per_rank=2", "algorithm.participation=0.5",
                                        "parallel.batched=off"]])
def test_fedprox_with_mu_zero_is_fedavg(extra):
    _, fedavg, _ = run([*NONIID, *extra, "algorithm.name=fedavg"])
    _, fedprox, _ = run([*NONIID, *extra, "algorithm.name=fedprox", "algorithm.mu=0"])
    assert torch.equal(fedavg.storage, fedprox.storage)
    assert rows(fedavg, "steps") == rows(fedprox, "steps") and rows(fedavg, "evals") == rows(fedprox, "evals")
    assert fedavg.syncs == fedprox.syncs


def test_fedprox_adds_the_proximal_gradient():
    trainer = trained([*NONIID, "algorithm.name=fedprox", "algorithm.mu=0.5", "train.steps=2"])
    policy, flat = trainer.policy, trainer.flat
    torch.manual_seed(trainer.comm.rank)
    flat.params.add_(torch.randn(flat.numel))  # a device far from the round's starting model
    grads = torch.randn(flat.numel)
    flat.grads.copy_(grads)
    policy.before_device_step(0, 2)
    assert torch.allclose(flat.grads, grads + 0.5 * (flat.params - policy.anchor))


def test_fedprox_keeps_devices_closer_to_the_global_model():
    def spread(mu: str) -> float:
        trainer = trained([*NONIID, "algorithm.name=fedprox", f"algorithm.mu={mu}", "train.steps=23"])
        drift = trainer.flat.params - trainer.policy.anchor  # three local steps after the last average
        return float(trainer.comm.reduce_metrics([float(drift.norm())])[0])
    assert spread("10.0") < 0.8 * spread("0")


def test_scaffold_costs_twice_fedavgs_bytes_and_its_first_round_is_fedavgs():
    _, fedavg, _ = run([*NONIID, "train.steps=4", "algorithm.name=fedavg"])
    _, scaffold, _ = run([*NONIID, "train.steps=4", "algorithm.name=scaffold"])
    assert torch.equal(fedavg.storage, scaffold.storage)  # c = cᵢ = 0 during the first round
    assert scaffold.steps[-1]["rounds"] == fedavg.steps[-1]["rounds"] == 1
    assert scaffold.steps[-1]["bytes_up"] == 2 * fedavg.steps[-1]["bytes_up"] == 2 * 4 * LENET
    assert scaffold.steps[-1]["bytes_down"] == 2 * fedavg.steps[-1]["bytes_down"]


@pytest.mark.parametrize("extra", [[], ["parallel.devices_per_rank=3"]])
def test_scaffold_control_variates_follow_option_two(extra):
    """Round 1 starts from c = cᵢ = 0, so cᵢ = (x₀ − yᵢ)/(Kη) and c = mean cᵢ = (x₀ − x₁)/(Kη);
    with everyone reporting, c stays the mean of the cᵢ in every later round."""
    trainer = trained([*NONIID, *extra, "algorithm.name=scaffold", "train.steps=4", "train.lr=0.05"])
    policy, comm = trainer.policy, trainer.comm
    x0 = build(from_dict(small_config(), [*NONIID, "algorithm.name=scaffold"]), comm).flat.params
    comm.broadcast_(x0)
    assert torch.allclose(policy.c, (x0 - policy.anchor) / (4 * 0.05), atol=1e-5)
    later = trained([*NONIID, *extra, "algorithm.name=scaffold"])
    locals_ = torch.cat([torch.as_tensor(r) for r in later.comm.allgather_object(later.policy.c_local.clone())])
    assert torch.allclose(later.policy.c, locals_.mean(0), atol=1e-5)


def test_scaffold_with_partial_participation_updates_only_the_reporters():
    trainer = trained([*NONIID, "algorithm.name=scaffold", "algorithm.participation=0.5", "train.steps=4",
                       "parallel.devices_per_rank=2"])
    reporters = [s["participants"] for s in trainer.outcome.syncs]
    assert reporters == [max(1, round(0.5 * 2 * trainer.comm.size))]
    changed = torch.cat([torch.as_tensor(r) for r in trainer.comm.allgather_object(
        (trainer.policy.c_local.abs().sum(1) > 0).clone())])
    assert int(changed.sum()) == reporters[0]
    assert np.isfinite(trainer.outcome.evals[-1]["test_acc"])
