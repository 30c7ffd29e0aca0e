"""pfl-research's side of ``flower.py``: the workload as pfl's FedAvg on its simulated backend,
started as pfl's documentation says a PyTorch simulation should use several processes of one
machine, ``torchrun --standalone --nnodes=1 --nproc_per_node=2`` (the cohort's users are split
over the processes and their updates all-reduced over gloo).

    torchrun --standalone --nnodes=1 --nproc_per_node=2 benchmarks/peers/pfl_app.py \\
        --devices 100 --cohort 10 --rounds 3 --out result.json

Built like pfl-research's own ``benchmarks/image_classification/pytorch/train.py``: a
``PyTorchModel`` with ``torch.optim.SGD`` as local optimizer and a central SGD of learning rate
1 (so the new global model is the plain mean of the cohort's models), ``FederatedAveraging`` with
``NNAlgorithmParams``, ``WeightByUser`` (every user counts the same, as edgempi's mean), a
``SimulatedBackend`` and a ``FederatedDataset`` of in-memory ``Dataset`` users (the fastest
kind, its simulation guide says). The users are edgempi's devices: the user sampler returns the
cohort edgempi draws (``(device, round)`` pairs), and a user's dataset is the batches that device
trains on in that round, in order, so one local epoch at batch 32 is its round. pfl's own central
evaluation and its validation cohort are off; process 0 scores the global model on the whole
test set before round 1 and after the last, as the other engines do, and writes when each round
ended and the final accuracy.
"""
from __future__ import annotations

import argparse
import json
import os
import time
import types
from pathlib import Path

import torch
import torch.nn.functional as F
from pfl.aggregate.simulate import SimulatedBackend
from pfl.aggregate.weighting import WeightByUser
from pfl.algorithm import FederatedAveraging, NNAlgorithmParams
from pfl.callback.base import TrainingProcessCallback
from pfl.data.dataset import Dataset
from pfl.data.federated_dataset import FederatedDataset
from pfl.hyperparam import NNEvalHyperParams, NNTrainHyperParams
from pfl.internal.ops.selector import get_default_framework_module as get_ops
from pfl.metrics import Metrics, Weighted
from pfl.model.pytorch import PyTorchModel
from workload import Workload


def classification_loss(self: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, eval: bool = False) -> torch.Tensor:
    """The loss pfl's ``PyTorchModel`` asks every module for (as pfl's benchmark models attach it)."""
    self.eval() if eval else self.train()
    return F.cross_entropy(self(x), y)


@torch.no_grad()
def classification_metrics(self: torch.nn.Module, x: torch.Tensor, y: torch.Tensor,
                           eval: bool = True) -> dict[str, Weighted]:
    self.eval() if eval else self.train()
    logits = self(x)
    return {"loss": Weighted(F.cross_entropy(logits, y, reduction="sum").item(), len(y)),
            "accuracy": Weighted((logits.argmax(1) == y).sum().item(), len(y))}


def pfl_module(work: Workload) -> torch.nn.Module:
    """edgempi's LeNet-5 with its initial weights, given the two methods pfl calls."""
    module = work.initial_model()
    module.loss = types.MethodType(classification_loss, module)
    module.metrics = types.MethodType(classification_metrics, module)
    return module


def cohort_sampler(work: Workload, rounds: int):
    """pfl's user sampler: edgempi's cohort of round 1, then of round 2, … as ``(device, round)``.
    pfl calls it on every process in the same order and gives each its share."""
    users = iter([(device, r) for r in range(1, rounds + 1) for device in work.cohort(r)])
    return lambda: next(users)


def federated_dataset(work: Workload, rounds: int) -> FederatedDataset:
    def user_dataset(user: tuple[int, int]) -> Dataset:
        return Dataset(work.round_batches(*user), user_id=user)

    return FederatedDataset(user_dataset, cohort_sampler(work, rounds))


class Clock(TrainingProcessCallback):
    """On process 0: when the evaluation before round 1 ended, when each round ended, and the
    accuracy after the last (the evaluation is edgempi's, on the whole test set)."""

    def __init__(self, work: Workload, rounds: int, out: Path) -> None:
        self.work, self.rounds, self.out = work, rounds, out
        self.lead = get_ops().distributed.global_rank == 0
        self.ready, self.ends = 0.0, []

    def on_train_begin(self, *, model: PyTorchModel) -> Metrics:
        if self.lead:
            self.work.accuracy(model.pytorch_model)
            self.ready = time.time()
        return Metrics()

    def after_central_iteration(self, aggregate_metrics: Metrics, model: PyTorchModel, *,
                                central_iteration: int) -> tuple[bool, Metrics]:
        self.ends.append(time.time())
        done = len(self.ends) == self.rounds
        if done and self.lead:
            accuracy = self.work.accuracy(model.pytorch_model)
            self.out.write_text(json.dumps({"ready": self.ready, "round_ends": self.ends, "accuracy": accuracy}))
        return done, Metrics()


def run(devices: int, cohort: int, rounds: int, out: Path, local_steps: int | None = None) -> torch.nn.Module:
    """The global model after ``rounds`` rounds of ``local_steps`` (default: one epoch of a
    device's shard, the benchmark's workload)."""
    torch.set_num_threads(1)  # torchrun's default with several processes per machine, as each edgempi rank has
    work = Workload(devices, rounds, cohort=cohort, local_steps=local_steps)
    module = pfl_module(work)
    t = work.cfg.train
    model = PyTorchModel(model=module, local_optimizer_create=torch.optim.SGD,
                         central_optimizer=torch.optim.SGD(module.parameters(), lr=1.0))
    backend = SimulatedBackend(training_data=federated_dataset(work, rounds), val_data=None,
                               postprocessors=[WeightByUser()])
    params = NNAlgorithmParams(central_num_iterations=rounds, evaluation_frequency=rounds + 1,
                               train_cohort_size=cohort, val_cohort_size=0)
    train = NNTrainHyperParams(local_learning_rate=t.lr, local_num_epochs=1, local_batch_size=work.batch_size)
    FederatedAveraging().run(algorithm_params=params, backend=backend, model=model, model_train_params=train,
                             model_eval_params=NNEvalHyperParams(local_batch_size=1000),
                             callbacks=[Clock(work, rounds, out)])
    return module


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--devices", type=int, required=True)
    p.add_argument("--cohort", type=int, required=True)
    p.add_argument("--rounds", type=int, required=True)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    workers = int(os.environ.get("WORLD_SIZE", "1"))
    if args.cohort % workers:
        p.error(f"--cohort {args.cohort} is not a multiple of the {workers} processes (pfl splits it evenly)")
    run(args.devices, args.cohort, args.rounds, args.out)


if __name__ == "__main__":
    main()
