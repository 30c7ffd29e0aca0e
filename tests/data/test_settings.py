"""Each data set declares its own keys and the shape of its images: the ``data`` section is read
into the settings of the data set ``data.name`` picks, and the model a config check builds is
built for that shape."""
from __future__ import annotations

import pytest

from edgempi import data, models
from edgempi.config import ConfigError, from_dict
from edgempi.data.sources import SyntheticSettings


def test_synthetic_keys_live_with_the_synthetic_data_set() -> None:
    cfg = from_dict({"data": {"name": "synthetic", "synthetic_side": 16, "synthetic_train": 64}})
    assert isinstance(cfg.data, SyntheticSettings) and cfg.data.input_shape() == (1, 16)
    assert data.from_settings(cfg.data).train_x.shape == (64, 1, 16, 16)
    mnist = from_dict({"data": {"name": "mnist"}})
    assert "synthetic_side" not in mnist.to_dict()["data"] and mnist.data.input_shape() == (1, 28)


def test_a_file_written_for_synthetic_data_switches_to_another_data_set() -> None:
    cfg = from_dict({"data": {"name": "synthetic", "synthetic_side": 16}}, ["data.name=mnist"])
    assert cfg.data.name == "mnist" and not hasattr(cfg.data, "synthetic_side")


@pytest.mark.parametrize(("override", "error"), [
    ("data.synthetic_train=0", "data.synthetic_train: must be > 0"),
    ("data.synthetic_test=-1", "data.synthetic_test: must be > 0"),
    ("data.synthetic_side=4", "data.synthetic_side: must be >= 8"),
    ("data.synthetic_side=big", "data.synthetic_side: expected an integer, got 'big'"),
])
def test_a_bad_data_set_key_is_a_one_line_error_naming_it(override: str, error: str) -> None:
    with pytest.raises(ConfigError) as info:
        from_dict({"data": {"name": "synthetic"}}, [override])
    assert str(info.value) == error


def test_the_model_is_checked_for_the_data_sets_input_shape() -> None:
    cifar = from_dict({"data": {"name": "cifar10"}, "model": {"name": "resnet18"}})
    assert cifar.data.input_shape() == (3, 32) and models.probe(cifar).conv1.in_channels == 3
    small = from_dict({"data": {"name": "synthetic", "synthetic_side": 16}, "model": {"name": "mlp"}})
    assert models.probe(small)[1].in_features == 16 * 16


def test_load_takes_a_data_sets_own_keys() -> None:
    assert data.load("synthetic", seed=3, synthetic_test=5, synthetic_side=9).test_x.shape == (5, 1, 9, 9)
