"""Serial tests of FDA's pieces: the AMS sketch's linearity and error bound, and the config keys."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from helpers import small_config

from edgempi.algorithms.fda import threshold
from edgempi.algorithms.sketch import AmsSketch
from edgempi.config import ConfigError, from_dict

DIM = 20_000


def vector(seed: int) -> torch.Tensor:
    """A drift-like vector: not centred, so a sketch without random signs is far off."""
    return 0.5 + torch.randn(DIM, generator=torch.Generator().manual_seed(seed))


def test_mean_of_sketches_is_the_sketch_of_the_mean():
    sketch = AmsSketch(DIM, 5, 250, seed=1)
    xs = [vector(s) for s in range(4)]
    mean_of_sketches = torch.stack([sketch.sketch_(x, torch.empty(sketch.size)) for x in xs]).mean(0)
    of_mean = sketch.sketch_(torch.stack(xs).mean(0), torch.empty(sketch.size))
    assert torch.allclose(mean_of_sketches, of_mean, rtol=1e-4, atol=1e-4)
    assert not torch.allclose(of_mean, AmsSketch(DIM, 5, 250, seed=2).sketch_(torch.stack(xs).mean(0),
                                                                               torch.empty(sketch.size)))


def test_sketch_norm_within_its_stated_bound_in_95_percent_of_seeded_trials():
    """|M − ‖v‖²| ≤ 4ε‖v‖² (ε = 1/√width) with probability ≥ 0.983 for depth 5 (see sketch.py)."""
    v = vector(0)
    exact = float(v.double().square().sum())
    hits = []
    for seed in range(200):
        sketch = AmsSketch(DIM, 5, 250, seed)
        estimate = sketch.sq_norm(sketch.sketch_(v, torch.empty(sketch.size)))
        hits.append(abs(estimate - exact) <= 4 * sketch.epsilon * exact)
    assert np.mean(hits) >= 0.95, np.mean(hits)


def test_sketch_size_and_epsilon():
    sketch = AmsSketch(1000, depth=5, width=250, seed=0)
    assert sketch.size == 1250 and math.isclose(sketch.epsilon, 1 / math.sqrt(250))
    assert set(sketch.signs.unique().tolist()) == {-1.0, 1.0}
    rows = sketch.index.view(5, 1000) // 250  # every row hashes into its own part of the table
    assert torch.equal(rows, torch.arange(5).unsqueeze(1).expand(5, 1000))


def test_theta_absolute_or_per_parameter():
    per_param = from_dict(small_config(), ["algorithm.name=fda", "algorithm.theta_per_param=4e-5"]).algorithm
    assert math.isclose(threshold(per_param, 61_706), 4e-5 * 61_706)
    absolute = from_dict(small_config(), ["algorithm.name=fda", "algorithm.theta=2.5"]).algorithm
    assert threshold(absolute, 61_706) == 2.5


@pytest.mark.parametrize("overrides,message", [
    (["algorithm.name=dynamic"], "algorithm.delta: dynamic needs the divergence threshold"),
    (["algorithm.name=dynamic", "algorithm.delta=-1"], "algorithm.delta: must be >= 0"),
    (["algorithm.name=dynamic", "algorithm.delta=1", "algorithm.check_every=0"], "algorithm.check_every: must be > 0"),
    (["algorithm.name=fda", "algorithm.variant=exact"], "algorithm.variant: unknown value 'exact'"),
    (["algorithm.name=fda", "algorithm.theta=-1"], "algorithm.theta: must be >= 0"),
    (["algorithm.name=fda", "algorithm.theta=.inf"], "algorithm.theta: expected a finite number"),
    (["algorithm.name=fda", "algorithm.theta_per_param=-1e-5"], "algorithm.theta_per_param: must be >= 0"),
    (["algorithm.name=fda", "algorithm.sketch_width=0"], "algorithm.sketch_width: must be > 0"),
    (["algorithm.name=fda", "algorithm.sketch_depth=2.5"], "algorithm.sketch_depth: expected an integer"),
])
def test_bad_keys_name_themselves(overrides, message):
    with pytest.raises(ConfigError) as err:
        from_dict(small_config(), overrides)
    assert message in str(err.value)


def test_exponent_without_a_dot_is_a_number():
    """YAML 1.1 reads 3e-5 as a string; the keys of small thresholds need it as a number."""
    cfg = from_dict(small_config(), ["algorithm.name=fda", "algorithm.theta_per_param=3e-5"])
    assert cfg.algorithm.theta_per_param == 3e-5
    with pytest.raises(ConfigError, match="train.lr: expected a number"):
        from_dict(small_config(), ["train.lr=e5"])
