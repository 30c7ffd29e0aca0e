"""Bad input never gets a traceback or a hang: one line, exit code 2, no results file."""
from __future__ import annotations

import pytest

from helpers import edgempi, small_config, write_config
from edgempi.config import ConfigError, from_dict, load

BAD = [
    (["train.lr=-1"], "train.lr: must be > 0"),
    (["train.lr=fast"], "train.lr: expected a number"),
    (["train.batch_size=0"], "train.batch_size: must be > 0"),
    (["train.batch_size=1.5"], "train.batch_size: expected an integer"),
    (["train.momentum=1.5"], "train.momentum: must be in [0, 1)"),
    (["train.epochs=2"], "train.steps: set only one of train.epochs and train.steps"),
    (["train.steps=null", "train.epochs=0"], "train.epochs: must be > 0"),
    (["train.optimzer=sgd"], "train.optimzer: unknown key"),
    (["bogus.key=1"], "bogus: unknown key"),
    (["algorithm.name=fedsgd"], "algorithm.name: unknown value 'fedsgd'"),
    (["algorithm.name=fedavg"], "fedavg needs exactly one of algorithm.local_steps"),
    (["model.name=vgg99"], "model.name: unknown value 'vgg99'"),
    (["data.name=imagenet"], "data.name: unknown value 'imagenet'"),
    (["model.norm=layer"], "model.norm: unknown value 'layer'"),
    (["network.preset=5g"], "network.preset: unknown value '5g'"),
    (["train.nesterov=maybe"], "train.nesterov: expected true or false"),
    (["train"], "an override must look like KEY=VALUE"),
    (["parallel.devices_per_rank=0"], "parallel.devices_per_rank: must be >= 1"),
    (["network.deadline_s=1"], "network.deadline_s: needs network.step_ms"),
]


@pytest.mark.parametrize("overrides,key", [
    (["parallel.devices_per_rank=2", "compression.name=topk"], "parallel.devices_per_rank"),
    (["parallel.devices_per_rank=2", "algorithm.name=centralized"], "parallel.devices_per_rank"),
    (["parallel.devices_per_rank=2", "algorithm.sync_bn=true"], "parallel.devices_per_rank"),
    (["network.step_ms=-1"], "network.step_ms"),
    (["network.step_ms=10", "network.deadline_s=0"], "network.deadline_s"),
    (["network.jitter=-0.1"], "network.jitter"),
    (["network.jitter=0.5", "parallel.mode=spatial", "parallel.grid=[1,2]"], "network.jitter"),
    (["network.step_ms=10", "network.deadline_s=1", "compression.name=topk"], "network.deadline_s"),
    (["network.step_ms=10", "network.deadline_s=1", "algorithm.sync_bn=true"], "network.deadline_s"),
    (["algorithm.name=fedavg", "algorithm.local_steps=2", "algorithm.balancing=true"], "algorithm.balancing"),
    (["algorithm.name=dynamic", "algorithm.delta=1", "algorithm.balancing=true", "algorithm.participation=0.5"],
     "algorithm.balancing"),
    (["algorithm.name=dynamic", "algorithm.delta=1", "algorithm.balancing=true", "network.step_ms=10",
      "network.deadline_s=1"], "algorithm.balancing"),
    (["algorithm.name=scaffold", "algorithm.local_steps=2", "train.momentum=0.9"], "train.momentum"),
    (["algorithm.name=scaffold", "algorithm.local_steps=2", "network.step_ms=10", "network.deadline_s=1"],
     "network.deadline_s"),
    (["algorithm.name=fedprox", "algorithm.local_steps=2", "algorithm.mu=-1"], "algorithm.mu"),
    (["algorithm.name=scaffold", "algorithm.local_steps=2", "compression.name=topk"], "compression.name"),
])
def test_combinations_the_devices_stragglers_and_balancing_refuse(overrides, key):
    with pytest.raises(ConfigError, match=f"^{key}: "):
        from_dict(small_config(), overrides)


@pytest.mark.parametrize("overrides,message", BAD)
def test_bad_config_is_one_line_and_exit_2(tmp_path, overrides, message):
    path = write_config(tmp_path / "c.yaml", small_config())
    args = [a for o in overrides for a in ("--set", o)]
    proc = edgempi("run", str(path), "--out", str(tmp_path / "out"), *args, timeout=60)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("edgempi: config error: "), proc.stderr
    assert message in lines[0]
    assert not (tmp_path / "out").exists()


def test_unreadable_and_malformed_files(tmp_path):
    proc = edgempi("validate", str(tmp_path / "missing.yaml"), timeout=60)
    assert proc.returncode == 2 and "cannot read config file" in proc.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [1, 2\n")
    proc = edgempi("validate", str(bad), timeout=60)
    assert proc.returncode == 2 and "not valid YAML" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_world_size_that_does_not_fit_the_method(tmp_path):
    path = write_config(tmp_path / "c.yaml", small_config(algorithm={"name": "centralized"}))
    proc = edgempi("run", str(path), "--out", str(tmp_path / "out"), ranks=2, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "edgempi: config error: algorithm.name: centralized runs on one rank, but the job has 2 (drop mpiexec -n)"]
    assert not (tmp_path / "out").exists()


def test_overrides_are_typed_and_nested():
    cfg = from_dict(small_config(), ["train.lr=0.2", "algorithm.name=fedavg", "algorithm.local_steps=8",
                                     "train.milestones=[1, 2.5]"])
    assert cfg.train.lr == 0.2 and cfg.algorithm.local_steps == 8 and cfg.train.milestones == [1.0, 2.5]
    assert isinstance(cfg.train.lr, float)


def test_config_round_trips_through_yaml(tmp_path):
    cfg = from_dict(small_config(), ["train.lr=0.125"])
    again = load(write_config(tmp_path / "again.yaml", __import__("yaml").safe_load(cfg.to_yaml())))
    assert again == cfg


def test_validate_reports_ok(tmp_path):
    path = write_config(tmp_path / "c.yaml", small_config())
    proc = edgempi("validate", str(path), timeout=60)
    assert proc.returncode == 0 and "ok" in proc.stdout


def test_error_names_the_key():
    with pytest.raises(ConfigError) as info:
        from_dict(small_config(), ["train.weight_decay=-0.1"])
    assert info.value.key == "train.weight_decay"
