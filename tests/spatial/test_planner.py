"""The grouping planner on a fixed (not timed) profile."""
from __future__ import annotations

import itertools

import pytest
from fronts import SIZE, mixed_front

from edgempi.sim import Link
from edgempi.spatial.layers import NORMS, is_windowed, windows
from edgempi.spatial.planner import Profile, plan_groups, predict


def _profile(size: tuple[int, int] = SIZE) -> Profile:
    front = mixed_front()
    return Profile(tuple(1e-6 * (1 + i % 3) for i in range(len(front))),
                   tuple(windows(m, i) for i, m in enumerate(front)), (4, 4, 4, 4, 6, 6, 6, 6, 6, 6, 4, 4),
                   tuple(isinstance(m, NORMS) for m in front), tuple(is_windowed(m) for m in front),
                   size, 8, 4, 1000, 1e-3)


def _groupings(profile: Profile):
    cuts = [i for i in range(1, len(profile.windows)) if profile.cuttable[i]]
    for k in range(len(cuts) + 1):
        for chosen in itertools.combinations(cuts, k):
            edges = [0, *chosen, len(profile.windows)]
            yield [(a, b - 1) for a, b in zip(edges, edges[1:])]


@pytest.mark.parametrize("link", [Link.symmetric(1e9, 1e-5), Link.symmetric(1e7, 1e-3), Link.symmetric(1e11, 0.0)],
                         ids=str)
@pytest.mark.parametrize("grid", [(1, 2), (2, 2)])
def test_dynamic_programming_finds_the_best_grouping(link: Link, grid: tuple[int, int]) -> None:
    profile = _profile()
    best = min(_predicted_or_inf(profile, link, grid, g) for g in _groupings(profile))
    assert plan_groups(profile, link, grid).predicted_s == pytest.approx(best, rel=1e-12)


def _predicted_or_inf(profile: Profile, link: Link, grid: tuple[int, int], groups) -> float:
    try:
        return predict(profile, link, grid, groups).predicted_s
    except ValueError:
        return float("inf")


def test_fast_links_cut_everywhere_slow_links_fuse() -> None:
    profile = _profile()
    fast = plan_groups(profile, Link.symmetric(1e15, 0.0), (2, 2))
    assert len(fast.groups) == sum(profile.cuttable)
    assert plan_groups(profile, Link.symmetric(1e6, 1e-2), (2, 2)).groups == [(0, 11)]


def test_prediction_adds_up_and_prints() -> None:
    plan = predict(_profile(), Link.symmetric(1e8, 1e-4), (2, 2), [(0, 3), (4, 11)])
    assert plan.predicted_s == pytest.approx(sum(plan.parts.values()))
    assert plan.parts["exchange"] > 0 and "predicted step" in str(plan) and "group [4, 11]" in str(plan)


def test_no_fitting_grouping_is_refused() -> None:
    with pytest.raises(ValueError, match=r"parallel\.grid: no grouping"):
        plan_groups(_profile((45, 20)), Link.symmetric(1e9, 1e-5), (1, 3))
