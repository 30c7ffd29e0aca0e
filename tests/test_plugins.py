"""User plug-ins by dotted path: a data set, a model, a method and a compressor from a module
outside the package (tests/plugins/my_plugins.py) run end to end, and their mistakes are
one-line config errors."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from helpers import ROOT, child_env, mpiexec, small_config, write_config

from edgempi import data, models
from edgempi.config import ConfigError, from_dict
from edgempi.record import open_for_reading

PLUGINS = str(Path(__file__).parent / "plugins")
MINE = {"data": {"name": "my_plugins:stripes"}, "model": {"name": "my_plugins:tiny_net"},
        "algorithm": {"name": "my_plugins:Periodic", "every": 5},
        "train": {"steps": 20, "batch_size": 8, "lr": 0.1, "eval_every": 10, "log_every": 5}}


@pytest.fixture(autouse=True)
def importable(monkeypatch):
    monkeypatch.syspath_prepend(PLUGINS)


def run(tmp_path: Path, cfg: dict, ranks: int = 2) -> subprocess.CompletedProcess:
    path = write_config(tmp_path / "c.yaml", cfg)
    env = dict(child_env(), PYTHONPATH=f"{ROOT}:{PLUGINS}")
    return subprocess.run([mpiexec(), "-n", str(ranks), sys.executable, "-m", "edgempi", "run", str(path),
                           "--out", str(tmp_path), "--set", "output.name=mine", "--quiet"],
                          capture_output=True, text=True, timeout=300, env=env)


def test_own_data_model_and_method_train_end_to_end(tmp_path):
    proc = run(tmp_path, small_config(**MINE))
    assert proc.returncode == 0, proc.stderr
    with open_for_reading(tmp_path / "mine.h5") as f:
        assert f.attrs["status"] == "completed" and f.attrs["algorithm"] == "my_plugins:Periodic"
        assert list(f["syncs/step"][()]) == [5, 10, 15, 20]
        assert f["steps/rounds"][-1] == 4
        assert f["evals/test_acc"][-1] > 0.9  # stripes are easy
        assert f["partition/counts"].shape == (2, 2)
        assert f.attrs["eval_model"] == "global"


def test_a_method_without_a_held_model_is_scored_only_on_the_average(tmp_path):
    cfg = small_config(**{**MINE, "algorithm": {"name": "my_plugins:Unheld", "every": 5}})
    refused = run(tmp_path, cfg)
    assert refused.returncode == 2 and not (tmp_path / "mine.h5").exists()
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and "train.eval_model" in lines[0] and "keeps no held model" in lines[0], lines
    cfg["train"]["eval_model"] = "average"
    averaged = run(tmp_path, cfg)
    assert averaged.returncode == 0, averaged.stderr
    with open_for_reading(tmp_path / "mine.h5") as f:
        assert f.attrs["eval_model"] == "average" and f.attrs["sync_bytes"] > 0


def test_own_data_set_declares_its_keys_and_the_input_shape_the_model_is_checked_for():
    cfg = from_dict({"data": {"name": "my_plugins:sized", "side": 12}, "model": {"name": "my_plugins:tiny_net"}})
    assert cfg.data.input_shape() == (1, 12) and cfg.to_dict()["data"]["side"] == 12
    assert models.probe(cfg)[1].in_features == 12 * 12
    assert data.from_settings(cfg.data, seed=1).train_x.shape[1:] == (1, 12, 12)
    with pytest.raises(ConfigError, match=r"^data\.side: must be >= 4$"):
        from_dict({"data": {"name": "my_plugins:sized", "side": 2}})
    with pytest.raises(ConfigError, match=r"^data\.side: unknown key"):
        from_dict({"data": {"name": "my_plugins:stripes", "side": 12}})


def test_own_compressor_sends_its_payload(tmp_path):
    cfg = small_config(**{**MINE, "algorithm": {"name": "large_batch"},
                          "compression": {"name": "my_plugins:Truncate16"}})
    proc = run(tmp_path, cfg)
    assert proc.returncode == 0, proc.stderr
    with open_for_reading(tmp_path / "mine.h5") as f:
        numel = 16 * 16 * 16 + 16 + 16 * 2 + 2
        assert f["steps/bytes_up"][-1] == 20 * 2 * numel  # 2 bytes per element, every step


@pytest.mark.parametrize("overrides,message", [
    (["algorithm.every=0"], "algorithm.every: must be > 0"),
    (["algorithm.evry=3"], "algorithm.evry: unknown key"),
    (["algorithm.name=my_plugins:Nothing"], "algorithm.name: 'my_plugins' has no 'Nothing'"),
    (["algorithm.name=no_such_module:Policy"], "algorithm.name: cannot import 'no_such_module'"),
    (["model.name=my_plugins:missing"], "model.name: 'my_plugins' has no 'missing'"),
    (["algorithm.name=my_plugins:tiny_net"], "declares no Settings dataclass"),
    (["algorithm.name=my_plugins:Undeclared"], "not an edgempi.algorithms.Capabilities"),
    (["algorithm.name=my_plugins:FormerStyle"], "declares exchanges_gradients as attributes; declare them in "
                                                "capabilities = Capabilities"),
])
def test_plugin_mistakes_are_config_errors(overrides, message):
    with pytest.raises(ConfigError, match=message):
        from_dict(small_config(**MINE), overrides)


def test_plugin_settings_are_stored_and_read_back():
    cfg = from_dict(small_config(**MINE))
    assert cfg.algorithm.every == 5 and type(cfg.algorithm).__name__ == "PeriodicSettings"
    assert from_dict(__import__("yaml").safe_load(cfg.to_yaml())) == cfg
