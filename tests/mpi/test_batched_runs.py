"""Batched device steps (``parallel.batched``) against the loop they replace.

The same seeded run is made with the loop (``off``) and batched (``on``), on any number of ranks
(``mpiexec -n 2``, or one rank): every device's final weights and optimizer rows, and every row
the results file would get (/steps, /evals, /syncs), must agree up to float rounding (the
batched forward and backward sum in another order). A wrong batch, a device given another's
optimizer state, a missed or doubled step, or a lost momentum differs by orders of magnitude more.
"""
from __future__ import annotations

import copy

import pytest
import torch
from helpers import small_config
from test_devices import COMMON as DEVICES_COMMON
from test_devices import assert_same_rows

from edgempi.comm import Comm
from edgempi.config import from_dict
from edgempi.train import Trainer, build

pytestmark = pytest.mark.mpi(min_size=1)
COMMON = [*DEVICES_COMMON, "parallel.devices_per_rank=3"]
METHODS = {
    "fedavg_momentum": ["algorithm.name=fedavg", "algorithm.local_steps=3", "train.momentum=0.9"],
    "fedavg_adam_participation": ["algorithm.name=fedavg", "algorithm.local_steps=2", "train.optimizer=adam",
                                  "train.lr=0.002", "train.weight_decay=1e-3", "algorithm.participation=0.75",
                                  "algorithm.dropout=0.2"],
    "fedavg_server_adam_augment": ["algorithm.name=fedavg", "algorithm.local_steps=2", "data.augment=true",
                                   "algorithm.server_optimizer=adam", "train.warmup_steps=4"],
    "large_batch_nesterov": ["algorithm.name=large_batch", "train.momentum=0.9", "train.nesterov=true",
                             "train.weight_decay=1e-3", "train.schedule=cosine"],
    "large_batch_deadline": ["algorithm.name=large_batch", "network.deadline_s=0.2", "train.momentum=0.5"],
    "fedavg_deadline_jitter": ["algorithm.name=fedavg", "algorithm.local_steps=2", "network.deadline_s=0.3",
                               "network.jitter=0.5"],
    "dynamic": ["algorithm.name=dynamic", "algorithm.delta=0.05", "algorithm.check_every=2", "train.momentum=0.5"],
    "dynamic_balancing": ["algorithm.name=dynamic", "algorithm.delta=0.02", "algorithm.check_every=2",
                          "algorithm.balancing=true"],
    "fda_linear": ["algorithm.name=fda", "algorithm.variant=linear", "algorithm.theta_per_param=1e-6"],
    "fda_sketch_adam": ["algorithm.name=fda", "algorithm.variant=sketch", "algorithm.theta_per_param=1e-6",
                        "train.optimizer=adam", "train.lr=0.002"],
    "keras_lenet_fedadam": ["algorithm.name=fedavg", "algorithm.local_steps=2", "model.name=lenet5_keras",
                            "data.normalize=false", "algorithm.server_optimizer=adam", "algorithm.server_lr=0.001",
                            "algorithm.server_bias_correction=true", "algorithm.server_eps=1e-7"],
    "mlp_drift": ["algorithm.name=fedavg", "algorithm.local_steps=2", "model.name=mlp", "data.drift.steps=[6]",
                  "data.drift.fraction=0.5"],
}


def trainer(overrides: list[str], batched: str) -> Trainer:
    """A run's trainer on all ranks, with a ledger of its own."""
    cfg = from_dict(small_config(), [*COMMON, *overrides, f"parallel.batched={batched}"])
    comm = Comm()
    made = Trainer(build(cfg, comm), comm)
    assert (made.unbatched_because is None) == (batched == "on")
    return made


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).norm() / a.float().norm().clamp_min(1e-12))


def assert_same_run(loop: Trainer, batch: Trainer, outcome_loop, outcome_batch) -> None:
    """Weights, optimizer rows and every recorded row agree up to float rounding."""
    diff = float((outcome_loop.storage - outcome_batch.storage).abs().max())
    assert torch.allclose(outcome_loop.storage, outcome_batch.storage, rtol=1e-4, atol=5e-4), diff
    assert loop.bank.optimizer_rows.keys() == batch.bank.optimizer_rows.keys()
    for key, rows in loop.bank.optimizer_rows.items():
        assert relative(rows, batch.bank.optimizer_rows[key]) < 5e-3, key
    assert (loop.bank.stepped == batch.bank.stepped).all()
    assert_same_rows(outcome_batch, outcome_loop, syncs_rel=1e-5, rel=1e-5)


@pytest.mark.parametrize("method", METHODS, ids=str)
def test_batched_steps_equal_the_loop(method):
    loop, batch = trainer(METHODS[method], "off"), trainer(METHODS[method], "on")
    assert_same_run(loop, batch, loop.run(), batch.run())


@pytest.mark.parametrize("method", ["fedavg_momentum", "fedavg_adam_participation", "large_batch_nesterov",
                                    "fda_sketch_adam", "mlp_drift"])
def test_batched_steps_equal_the_loop_step_by_step(method):
    """Three steps from the same start: weights, gradients (large_batch) and optimizer rows
    agree to 1e-6, before any kink can be crossed differently (Adam: 1e-4, as it divides a
    gradient entry of 1e-9 by its own size, so its rounding becomes a step of up to lr)."""
    assert_same_steps(method, trainer(METHODS[method], "off"), trainer(METHODS[method], "on"))


@pytest.mark.parametrize("method", ["fedavg_momentum", "large_batch_nesterov"])
def test_devices_split_into_several_groups_take_the_loops_steps(method):
    """Groups of at most 2 of a rank's 3 devices (sizes 1 and 2): no device left out or doubled."""
    batch = trainer(METHODS[method], "on")
    batch.local.group = 2
    assert_same_steps(method, trainer(METHODS[method], "off"), batch)


def assert_same_steps(method: str, loop: Trainer, batch: Trainer) -> None:
    atol = 1e-4 if "adam" in method else 1e-6
    for run in (loop, batch):
        run.started = 0.0
        run.flat.model.train()
    for step in range(3):
        assert loop.train_step(step) == pytest.approx(batch.train_step(step), rel=1e-6)
        assert torch.allclose(loop.bank.storage, batch.bank.storage, rtol=0, atol=atol)
        if loop.capabilities.exchanges_gradients and loop.bank.count > 1:
            assert torch.allclose(loop.bank.grads, batch.bank.grads, rtol=0, atol=1e-6)
        for key, rows in loop.bank.optimizer_rows.items():
            assert torch.allclose(rows, batch.bank.optimizer_rows[key], rtol=1e-5, atol=atol), key
    assert not torch.equal(loop.bank.storage[0], trainer(METHODS[method], "on").bank.storage[0])  # it moved


class Snapshot:
    """A checkpointer that keeps the trainer's state at ``at`` (what a checkpoint file holds)."""

    def __init__(self, at: int) -> None:
        self.at, self.state = at, None

    def maybe_save(self, trainer: Trainer) -> None:
        if trainer.step == self.at:
            self.state = copy.deepcopy(trainer.state_dict())


@pytest.mark.parametrize("method", ["fedavg_adam_participation", "large_batch_nesterov", "fda_linear"])
def test_a_batched_run_resumes_from_its_checkpoint_on_either_path(method):
    """A batched run's checkpoint holds the loop's state (the bank's rows): resumed batched or
    with the loop, the run ends where the uninterrupted one does."""
    whole, snapshot = trainer(METHODS[method], "on"), Snapshot(6)
    whole.run(snapshot)
    assert snapshot.state is not None
    for path in ("on", "off"):
        resumed = trainer(METHODS[method], path)
        resumed.load_state_dict(copy.deepcopy(snapshot.state))
        outcome = resumed.run()
        assert torch.allclose(outcome.storage, whole.outcome.storage, rtol=1e-5, atol=5e-5), path
        if path == "on":
            assert torch.equal(outcome.storage, whole.outcome.storage)  # the same computation, bit for bit
        assert [r["step"] for r in outcome.steps] == [9, 12]
