"""What an evaluation scores (``train.eval_model``), in whole runs (collective).

Under ``global`` a method is scored on the model its last sync produced, so between two syncs
every evaluation gives the same loss; under ``average`` it is scored on the devices' current
average, which moves with every local step.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import small_config

from edgempi.comm import Comm
from edgempi.config import from_dict
from edgempi.evaluate import evaluate
from edgempi.train import Trainer, build

pytestmark = pytest.mark.mpi(min_size=2)
EVERY_STEP = ["train.steps=14", "train.eval_every=1", "train.log_every=7", "data.partition=dirichlet",
              "data.alpha=0.5"]
METHODS = {
    "fedavg": ["algorithm.name=fedavg", "algorithm.local_steps=4"],
    "fedadam": ["algorithm.name=fedavg", "algorithm.local_steps=4", "algorithm.server_optimizer=adam"],
    "fedavg_bn": ["algorithm.name=fedavg", "algorithm.local_steps=4", "model.norm=batch"],
    "dynamic": ["algorithm.name=dynamic", "algorithm.delta=0.02", "algorithm.check_every=3"],
    "fda": ["algorithm.name=fda", "algorithm.theta=0.02"],
}
LAYOUTS = {
    "ranks": [],
    "devices_batched": ["parallel.devices_per_rank=3", "algorithm.participation=0.5", "parallel.batched=true"],
    "devices_looped": ["parallel.devices_per_rank=3", "algorithm.participation=0.5", "parallel.batched=false"],
}


def trained(overrides: list[str]) -> Trainer:
    comm = Comm()
    trainer = Trainer(build(from_dict(small_config(), overrides), comm), comm)
    trainer.run()
    return trainer


def losses_by_round(trainer: Trainer) -> list[list[float]]:
    """The evaluations' losses, split at every sync (an evaluation at a sync's step belongs to
    the round it starts)."""
    synced = {s["step"] for s in trainer.outcome.syncs if s.get("participants", 1) > 0}
    rounds: list[list[float]] = [[]]
    for row in trainer.outcome.evals:
        if row["step"] in synced:
            rounds.append([])
        rounds[-1].append(row["test_loss"])
    return rounds


CASES = [(m, layout) for m in METHODS for layout in LAYOUTS
         if not (m == "fedavg_bn" and layout == "devices_batched")]  # BatchNorm's statistics are never batched


@pytest.mark.parametrize("method,layout", CASES, ids="-".join)
def test_global_evaluations_are_constant_between_syncs(method, layout):
    sets = [*EVERY_STEP, *METHODS[method], *LAYOUTS[layout]]
    rounds = losses_by_round(trained(sets))
    assert len(rounds) >= 3, "too few syncs to test anything"
    for losses in rounds:
        assert len(set(losses)) == 1, losses
    assert len({r[0] for r in rounds}) == len(rounds)  # a new sync, a new model
    averaged = losses_by_round(trained([*sets, "train.eval_model=average"]))
    assert any(len(set(losses)) > 1 for losses in averaged)  # the other protocol would fail the check above


def test_fedopt_is_scored_on_its_server_model():
    """Mid-round, a FedAdam run's evaluation is that of the server's model (the anchor every
    device started the round from), not of anything the devices hold."""
    trainer = trained([*EVERY_STEP, *METHODS["fedadam"], "train.steps=14"])  # 14: two steps into round 4
    policy, bank = trainer.policy, trainer.bank
    assert not torch.allclose(bank.params[0], policy.anchor)
    server = [(slice(0, bank.flat.numel), policy.anchor)]
    with trainer.comm.uncounted():
        loss, acc = evaluate(bank, trainer.setup.peers, trainer.test_shards, trainer.loaders[0].normalize, server)
    last = trainer.outcome.evals[-1]
    assert np.isclose(last["test_loss"], loss, rtol=1e-6) and last["test_acc"] == acc


def test_the_stored_protocol_names_what_was_scored(tmp_path):
    from edgempi.runner import protocol_attrs

    fedavg = trained([*EVERY_STEP, *METHODS["fedavg"], "train.eval_model=average", "train.steps=2"])
    assert protocol_attrs(fedavg.cfg, fedavg.policy) == {"eval_model": "average", "sync_bytes": 4 * 61_706}
    large = trained(["train.eval_model=average", "train.steps=2"])
    assert protocol_attrs(large.cfg, large.policy) == {"eval_model": "global"}  # one model: nothing averaged


def test_average_scores_the_devices_mean_as_before():
    """``average`` is the old protocol: mid-round, the score of the mean of every device's
    current model (all ranks' rows), not the held model of the last sync."""
    sets = [*EVERY_STEP, *METHODS["fedavg"], "parallel.devices_per_rank=3", "train.eval_model=average",
            "train.steps=14"]
    trainer = trained(sets)
    rows = torch.cat([torch.as_tensor(r) for r in trainer.comm.allgather_object(trainer.bank.params.clone())])
    mean = [(slice(0, trainer.bank.flat.numel), rows.mean(0))]
    with trainer.comm.uncounted():
        loss, acc = evaluate(trainer.bank, trainer.setup.peers, trainer.test_shards, trainer.loaders[0].normalize, mean)
    last = trainer.outcome.evals[-1]
    assert np.isclose(last["test_loss"], loss, rtol=1e-5) and abs(last["test_acc"] - acc) <= 1e-3
    held = [(trainer.policy.held.positions, trainer.policy.held.values)]
    with trainer.comm.uncounted():
        assert not np.isclose(evaluate(trainer.bank, trainer.setup.peers, trainer.test_shards,
                                       trainer.loaders[0].normalize, held)[0], loss)
