"""Concept drift: it happens at the configured steps, on the configured devices only."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import edgempi, self_comm, small_config, write_config

from edgempi.config import from_dict
from edgempi.data.concept_drift import DriftConfig, DriftSchedule
from edgempi.record import open_for_reading
from edgempi.settings import ConfigError
from edgempi.train import build

DRIFT = ["algorithm.name=fedavg", "algorithm.local_steps=4", "train.steps=20"]


def loaders(extra: list[str], devices: int = 4):
    cfg = from_dict(small_config(), [*DRIFT, f"parallel.devices_per_rank={devices}", *extra])
    return build(cfg, self_comm())


@pytest.mark.parametrize("kind,extra", [("permute_labels", []), ("swap_classes", ["data.drift.classes=[0,1,2,3]"])])
def test_labels_change_at_the_step_on_the_chosen_devices_only(kind, extra):
    setup = loaders(["data.drift.steps=[5,12]", f"data.drift.kind={kind}", "data.drift.fraction=0.5", *extra], 8)
    schedule = setup.drift
    assert schedule.affected.sum(1).tolist() == [4, 4]
    for d, loader in enumerate(setup.loaders):
        base = loader.loaders[d]
        for step in (0, 4, 5, 11, 12, 19):
            x, y = loader.batch(step)
            bx, by = base.batch(step)
            assert torch.equal(x, bx)  # the same images: only the labels drift
            events = sum(step >= s for s in (5, 12))
            changed = schedule.affected[:events, d].any() and not np.array_equal(schedule.labels[events, d],
                                                                                  np.arange(10))
            assert torch.equal(y, by) != changed, (d, step)
    if kind == "swap_classes":
        hit = schedule.affected[0].argmax()
        assert schedule.labels[1, hit, :4].tolist() == [1, 0, 3, 2]


def test_the_fraction_is_seeded_and_the_same_for_every_rank():
    cfg = DriftConfig(steps=[3], fraction=0.25)
    a = DriftSchedule(cfg, 7, 16, 10).affected
    assert np.array_equal(a, DriftSchedule(cfg, 7, 16, 10).affected) and a.sum() == 4
    assert not np.array_equal(a, DriftSchedule(cfg, 8, 16, 10).affected)


def test_switch_shards_hands_each_chosen_device_anothers_shard():
    setup = loaders(["data.drift.steps=[6]", "data.drift.kind=switch_shards", "data.drift.fraction=0.5"])
    schedule = setup.drift
    chosen = np.flatnonzero(schedule.affected[0])
    assert sorted(schedule.shards[1, chosen]) == sorted(chosen) and (schedule.shards[1, chosen] != chosen).all()
    for d, loader in enumerate(setup.loaders):
        before = loader.batch(5)[0]
        assert torch.equal(before, loader.loaders[d].batch(5)[0])
        after, own = loader.batch(6)[0], loader.loaders[d].batch(6)[0]
        assert torch.equal(after, own) == (d not in chosen)


@pytest.mark.parametrize("extra,key", [
    (["data.drift.steps=[20]"], "data.drift.steps"),  # beyond the run of 20 steps
    (["data.drift.steps=[5,3]"], "data.drift.steps"),
    (["data.drift.steps=[5]", "data.drift.kind=rotate"], "data.drift.kind"),
    (["data.drift.steps=[5]", "data.drift.fraction=0"], "data.drift.fraction"),
    (["data.drift.steps=[5]", "data.drift.kind=swap_classes"], "data.drift.classes"),
    (["data.drift.steps=[5]", "data.drift.kind=swap_classes", "data.drift.classes=[1,1]"], "data.drift.classes"),
    (["data.drift.steps=[5]", "train.steps=null", "train.epochs=1"], "data.drift.steps"),
    (["data.drift.steps=[5]", "algorithm.name=centralized"], "data.drift.steps"),
])
def test_bad_drift_settings_are_one_line_errors(extra, key):
    with pytest.raises(ConfigError) as err:
        from_dict(small_config(), [*DRIFT, *extra])
    assert err.value.key == key


def test_the_results_file_records_the_drift(tmp_path):
    sets = [*DRIFT, "data.drift.steps=[10]", "data.drift.fraction=0.5", "train.eval_every=5"]
    cfg = write_config(tmp_path / "c.yaml", small_config())
    proc = edgempi("run", str(cfg), "--out", str(tmp_path), "--quiet", *[a for s in sets for a in ("--set", s)],
                   "--set", "output.name=d.h5", ranks=2)
    assert proc.returncode == 0, proc.stderr
    with open_for_reading(tmp_path / "d.h5") as f:
        assert f["partition/drift_steps"][()].tolist() == [10]
        assert f["partition/drift_devices"][()].tolist() in ([[1, 0]], [[0, 1]])
        assert "drift" in f.attrs["config"]
