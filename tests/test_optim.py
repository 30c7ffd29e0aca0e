"""edgempi's optimizers are torch's, without the compiler wrappers: the same update, state and
state_dict, bit for bit, whichever of the two wrote a checkpoint."""
from __future__ import annotations

import copy

import pytest
import torch

from edgempi.util import optim

SETTINGS = [
    ("SGD", {"lr": 0.1}),
    ("SGD", {"lr": 0.1, "momentum": 0.9, "weight_decay": 1e-4}),
    ("SGD", {"lr": 0.1, "momentum": 0.9, "nesterov": True, "weight_decay": 1e-4}),
    ("Adam", {"lr": 0.01}),
    ("Adam", {"lr": 0.01, "weight_decay": 1e-4}),
]


def train(optimizer_class: type, settings: dict, steps: int, start: torch.Tensor,
          state: dict | None = None) -> tuple[torch.Tensor, torch.optim.Optimizer]:
    param = torch.nn.Parameter(start.clone())
    optimizer = optimizer_class([param], **settings)
    if state is not None:
        optimizer.load_state_dict(state)
    for step in range(steps):
        optimizer.zero_grad()
        (param.sin() * (step + 1)).sum().backward()
        optimizer.step()
    return param.detach(), optimizer


@pytest.mark.parametrize("name,settings", SETTINGS)
def test_the_same_steps_as_torchs_optimizer(name, settings):
    start = torch.randn(1000, generator=torch.Generator().manual_seed(0))
    ours, theirs = getattr(optim, name), getattr(torch.optim, name)
    assert issubclass(ours, theirs) and ours is not theirs
    mine, a = train(ours, settings, 6, start)
    torchs, b = train(theirs, settings, 6, start)
    assert torch.equal(mine, torchs)
    assert str(a.state_dict()) == str(b.state_dict())
    # a checkpoint torch's class wrote (loading shares its tensors, which the steps change)
    resumed, _ = train(ours, settings, 3, torchs, state=copy.deepcopy(b.state_dict()))
    continued, _ = train(theirs, settings, 3, torchs, state=copy.deepcopy(b.state_dict()))
    assert torch.equal(resumed, continued)


@pytest.mark.parametrize("overrides,eps", [([], 1e-8), (["train.adam_eps=1e-7"], 1e-7)])
def test_train_adam_eps_reaches_the_optimizer(overrides, eps):
    from helpers import small_config

    from edgempi import models
    from edgempi.config import from_dict
    from edgempi.flat import FlatModel
    from edgempi.train import make_optimizer

    cfg = from_dict(small_config(train={"optimizer": "adam", "lr": 1e-3}), overrides)
    optimizer = make_optimizer(cfg, FlatModel(models.create("mlp", input_size=4)))
    assert isinstance(optimizer, optim.Adam) and optimizer.param_groups[0]["eps"] == eps
