"""Partitioned training equals training on one device (float64, 1e-8).

Run with ``mpiexec -n 4 python -m pytest --with-mpi -m mpi tests/spatial``: each case splits the
world into a group of R·C ranks (1×2, 2×1, 2×2, 1×3) and the rest; the group's ranks compare
against the unpartitioned network built from the same seed. The verdict is reduced over the
whole world after every collective, so a failure on one rank cannot hang the others.
"""
from __future__ import annotations

import copy

import pytest
import torch
from fronts import GROUPINGS, SIZE, mixed_front, tail
from torch import nn

from edgempi.comm import Comm
from edgempi.spatial.model import SpatialModel, spatial_groups

TOL = 1e-8
GRIDS = [(1, 2), (2, 1), (2, 2), (1, 3)]


def _group(ranks: int) -> tuple[Comm, Comm]:
    world = Comm()
    return world, world.split(0 if world.rank < ranks else 1)


def _max_diff(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    return max(float((x - y).abs().max()) for x, y in zip(a, b))


def _train_step_errors(grid: tuple[int, int], groups: list[tuple[int, int]], norm: str, train: bool,
                       comm: Comm) -> list[float]:
    """[output, input grad, weight grads, parameters after SGD, buffers] max abs differences."""
    torch.manual_seed(0)
    front, head = mixed_front(norm).double(), tail().double()
    ref = nn.Sequential(copy.deepcopy(front), copy.deepcopy(head))
    model = SpatialModel(front, head, comm, grid, groups, SIZE)
    model.train(train)
    ref.train(train)
    x = torch.randn(3, 2, *SIZE, dtype=torch.float64)
    target = torch.randn(3, 5, dtype=torch.float64)
    xs, xr = x.clone().requires_grad_(), x.clone().requires_grad_()
    opts = [torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3) for m in (model, ref)]
    ys, yr = model(xs), ref(xr)
    for y in (ys, yr):
        nn.functional.mse_loss(y, target).backward()
    model.allreduce_grads_()
    grads = _max_diff([p.grad for p in model.parameters()], [p.grad for p in ref.parameters()])
    for opt in opts:
        opt.step()
    return [_max_diff([ys], [yr]), _max_diff([xs.grad], [xr.grad]), grads,
            _max_diff(list(model.parameters()), list(ref.parameters())),
            _max_diff(list(model.buffers()), list(ref.buffers())) if list(ref.buffers()) else 0.0]


def _verdict(world: Comm, member: bool, errors: list[float]) -> list[float]:
    return list(world.reduce_metrics(errors if member else [0.0] * 5, op="max"))


@pytest.mark.mpi(min_size=4)
@pytest.mark.parametrize("grid", GRIDS, ids=lambda g: f"{g[0]}x{g[1]}")
@pytest.mark.parametrize("groups", GROUPINGS.values(), ids=GROUPINGS.keys())
@pytest.mark.parametrize("train", [True, False], ids=["bn_train", "bn_eval"])
def test_same_training_as_one_device(grid: tuple[int, int], groups: list[tuple[int, int]], train: bool) -> None:
    world, comm = _group(grid[0] * grid[1])
    member = world.rank < grid[0] * grid[1]
    errors = _train_step_errors(grid, groups, "batch", train, comm) if member else []
    assert max(_verdict(world, member, errors)) < TOL


@pytest.mark.mpi(min_size=4)
def test_group_norm_statistics_over_owned_positions() -> None:
    world, comm = _group(4)
    assert max(_verdict(world, True, _train_step_errors((2, 2), GROUPINGS["three"], "group", True, comm))) < TOL


@pytest.mark.mpi(min_size=4)
def test_one_round_per_step_and_halo_bytes_counted() -> None:
    """The weight-gradient Allreduce is the step's only round; tiles and halos count as bytes."""
    world, comm = _group(4)
    _train_step_errors((2, 2), GROUPINGS["three"], "batch", True, comm)
    ledger = comm.ledger
    front_bytes = 8 * sum(p.numel() for p in mixed_front().parameters())
    got = world.reduce_metrics([ledger.rounds, ledger.bytes_up - front_bytes, ledger.bytes_down - front_bytes],
                               op="min")
    assert got[0] == 1 and got[1] > 0 and got[2] > 0


@pytest.mark.mpi(min_size=4)
def test_wrong_group_size_is_refused_before_any_collective() -> None:
    world = Comm()
    with pytest.raises(ValueError, match=r"parallel\.grid: \[1, 3\] needs 3 ranks per group, the group has 4"):
        SpatialModel(mixed_front(), tail(), world, (1, 3), GROUPINGS["fused"], SIZE)


@pytest.mark.mpi(min_size=4)
def test_flat_model_reduces_the_front_in_place() -> None:
    """With ``FlatModel``, the front is the leading slice of its gradient buffer."""
    from edgempi.flat import FlatModel

    world = Comm()
    torch.manual_seed(0)
    models = [SpatialModel(mixed_front(), tail(), world, (2, 2), GROUPINGS["three"], SIZE) for _ in range(2)]
    models[1].load_state_dict(models[0].state_dict())
    flat = FlatModel(models[1])
    x = torch.randn(2, 2, *SIZE)
    for m in models:
        m(x).square().sum().backward()
    models[0].allreduce_grads_()
    models[1].allreduce_grads_(flat.grads)
    diff = _max_diff([p.grad for p in models[0].parameters()], [p.grad for p in models[1].parameters()])
    assert world.reduce_metrics([diff], op="max")[0] < 1e-6


@pytest.mark.mpi(min_size=4)
def test_data_parallel_across_two_spatial_groups() -> None:
    """Two 1×2 groups on different halves of a batch, gradients averaged across them, equal
    one device on the whole batch (norm in eval mode: group-local statistics are by design)."""
    world = Comm()
    group, peers = spatial_groups(world, (1, 2))
    torch.manual_seed(0)
    front, head = mixed_front().double(), tail().double()
    ref = nn.Sequential(copy.deepcopy(front), copy.deepcopy(head)).eval()
    model = SpatialModel(front, head, group, (1, 2), GROUPINGS["three"], SIZE).eval()
    x, target = torch.randn(4, 2, *SIZE, dtype=torch.float64), torch.randn(4, 5, dtype=torch.float64)
    half = slice(2 * (world.rank // 2), 2 * (world.rank // 2) + 2)
    nn.functional.mse_loss(model(x[half]), target[half]).backward()
    nn.functional.mse_loss(ref(x), target).backward()
    model.allreduce_grads_()
    flat = torch.cat([p.grad.reshape(-1) for p in model.parameters()])
    peers.allreduce_mean_(flat)
    diff = float((flat - torch.cat([p.grad.reshape(-1) for p in ref.parameters()])).abs().max())
    assert world.reduce_metrics([diff], op="max")[0] < TOL
