"""Region arithmetic, checked against torch's own shapes and receptive fields (no MPI)."""
from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F
from fronts import GROUPINGS, SIZE, mixed_front
from torch import nn

from edgempi.spatial.geometry import Window, check_groups, plan_axis, plan_front, split, width
from edgempi.spatial.layers import windows


@pytest.mark.parametrize("n,k,s,p,d", [(n, k, s, p, d) for n, k, s, p, d in itertools.product(
    (7, 8, 13), (1, 2, 3, 5), (1, 2, 3), (0, 1, 2), (1, 2)) if p <= k // 2 and d * (k - 1) < n])
def test_out_size_matches_torch(n: int, k: int, s: int, p: int, d: int) -> None:
    out = F.conv2d(torch.zeros(1, 1, n, n), torch.zeros(1, 1, k, k), stride=s, padding=p, dilation=d)
    assert Window(k, s, p, d).out_size(n) == out.shape[-1]


def test_back_is_the_reference_formula() -> None:
    assert Window(3, 2, 1).back(4, 6) == (4 * 2 - 1, 6 * 2 - 1 + 3 - 1)   # conv [o1·s − p, o2·s − p + k − 1]
    assert Window(2, 2, 0).back(4, 6) == (8, 6 * 2 + 2 - 1)               # max-pool [o1·s, o2·s + s − 1]
    assert Window(3, 1, 2, d=2).back(0, 0) == (-2, 2)


def test_split_covers_evenly() -> None:
    assert split(10, 3) == [(0, 2), (3, 5), (6, 9)]
    assert sum(width(r) for r in split(45, 4)) == 45


def _support(front: nn.Sequential, size: tuple[int, int], rows: tuple[int, int], cols: tuple[int, int]) -> tuple:
    """Bounding box of the input positions an output tile depends on, from autograd."""
    with torch.no_grad():
        for m in front.modules():
            if isinstance(m, nn.Conv2d):
                m.weight.fill_(1.0)
    x = torch.ones(1, front[0].in_channels, *size, requires_grad=True)
    front(x)[..., rows[0]:rows[1] + 1, cols[0]:cols[1] + 1].sum().backward()
    nz = x.grad.abs().sum((0, 1)).nonzero()
    return (int(nz[:, 0].min()), int(nz[:, 0].max())), (int(nz[:, 1].min()), int(nz[:, 1].max()))


@pytest.mark.parametrize("parts", [2, 3])
def test_walk_back_is_the_receptive_field(parts: int) -> None:
    """Convs and average pools of all-ones weights: gradient support = the region read.

    The last tile may compute a little more (positions no window reads, kept so that every
    position has an owner), so its far end is only bounded.
    """
    front = nn.Sequential(nn.Conv2d(1, 1, 3, padding=1), nn.AvgPool2d(3, 2, padding=1),
                          nn.Conv2d(1, 1, (5, 3), stride=2, padding=(2, 0)), nn.Conv2d(1, 1, 3, dilation=2))
    plan = plan_front([windows(m, i) for i, m in enumerate(front)], (121, 96), (parts, parts), [(0, 3)])[0]
    for i, j in itertools.product(range(parts), repeat=2):
        support = _support(front, (121, 96), plan.rows.need[i][-1], plan.cols.need[j][-1])
        for (lo, hi), axis, t in zip(support, (plan.rows, plan.cols), (i, j)):
            start = axis.need[t][0][0]
            end = start + axis.take[t][0][1]
            assert lo == start and (hi == end if t + 1 < parts else hi <= end)


def test_borders_are_padded_only_at_the_map_edge() -> None:
    plan = plan_axis([Window(3, 1, 1), Window(3, 1, 1)], 20, 2)
    assert plan.pads == (((1, 0), (1, 0)), ((0, 1), (0, 1)))
    assert plan.need[0][0] == (0, 11) and plan.need[1][0] == (8, 19)


@pytest.mark.parametrize("grid", [(1, 2), (2, 2), (1, 3), (2, 1)])
@pytest.mark.parametrize("groups", GROUPINGS.values(), ids=GROUPINGS.keys())
def test_owners_partition_every_map(grid: tuple[int, int], groups: list[tuple[int, int]]) -> None:
    front = mixed_front()
    for plan in plan_front([windows(m, i) for i, m in enumerate(front)], SIZE, grid, groups):
        for axis in (plan.rows, plan.cols):
            for j, n in enumerate(axis.sizes):
                owned = [own[j] for own in axis.own]
                assert owned[0][0] == 0 and owned[-1][1] == n - 1
                assert all(a[1] + 1 == b[0] for a, b in zip(owned, owned[1:]))
                assert all(need[j][0] <= own[j][0] and own[j][1] <= need[j][1]
                           for need, own in zip(axis.need, axis.own))


def test_tiles_smaller_than_the_halo_are_refused() -> None:
    w = [windows(m, i) for i, m in enumerate(mixed_front())]
    with pytest.raises(ValueError, match=r"parallel\.grid: row tiles at the input of layer 4 would be "
                                         r"8 px, smaller than their halo of 9 px"):
        plan_front(w, SIZE, (3, 1), [(0, 11)])
    with pytest.raises(ValueError, match=r"parallel\.grid: column tiles .* empty"):
        plan_front(w, (45, 30), (1, 3), [(0, 11)])
    plan_front(w, SIZE, (3, 1), GROUPINGS["per_layer"])  # shorter groups fit


@pytest.mark.parametrize("groups", [[(0, 3), (5, 11)], [(0, 3)], [(0, 12)], [(3, 1), (2, 11)]])
def test_bad_groups_are_refused(groups: list[tuple[int, int]]) -> None:
    with pytest.raises(ValueError, match=r"parallel\.groups"):
        check_groups(groups, 12)


@pytest.mark.parametrize("module", [nn.Dropout(), nn.LayerNorm(4), nn.MaxPool2d(2, ceil_mode=True),
                                    nn.Conv2d(1, 1, 3, padding="same"), nn.Conv2d(1, 1, 3, padding_mode="reflect")])
def test_unsupported_layers_are_refused(module: nn.Module) -> None:
    with pytest.raises(ValueError, match=r"parallel\.layers: layer 4"):
        windows(module, 4)
