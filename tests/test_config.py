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
    (["train.epochs=2", "train.steps=5"], "train.steps: set only one of train.epochs and train.steps"),
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
    (["algorithm.bucket_mb=-1"], "algorithm.bucket_mb"),
    (["train.adam_eps=0"], "train.adam_eps"),
    (["data.normalize=maybe"], "data.normalize"),
    (["algorithm.name=fedavg", "algorithm.local_steps=2", "algorithm.bucket_mb=1"], "algorithm.bucket_mb"),
])
def test_combinations_the_devices_stragglers_and_balancing_refuse(overrides, key):
    with pytest.raises(ConfigError, match=f"^{key}: "):
        from_dict(small_config(), overrides)


@pytest.mark.parametrize("overrides,message", BAD)
def test_bad_config_is_one_line_and_exit_2(tmp_path, overrides, message):
    path = write_config(tmp_path / "c.yaml", small_config())
    args = [a for o in overrides for a in ("--set", o)]
    proc = edgempi("run", str(path), "--out", str(tmp_path / "out"), *args, timeout=180)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("edgempi: config error: "), proc.stderr
    assert message in lines[0]
    assert not (tmp_path / "out").exists()


def test_unreadable_and_malformed_files(tmp_path):
    proc = edgempi("validate", str(tmp_path / "missing.yaml"), timeout=180)
    assert proc.returncode == 2 and "cannot read config file" in proc.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [1, 2\n")
    proc = edgempi("validate", str(bad), timeout=180)
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
    proc = edgempi("validate", str(path), timeout=180)
    assert proc.returncode == 0 and "ok" in proc.stdout


def test_steps_on_the_command_line_replace_the_files_epochs():
    cfg = small_config(train={"epochs": 2, "steps": None})
    assert from_dict(cfg, ["train.steps=7"]).train.steps == 7 and from_dict(cfg, ["train.steps=7"]).train.epochs is None
    assert from_dict(small_config(), ["train.epochs=0.5"]).train.epochs == 0.5
    with pytest.raises(ConfigError, match="^train.steps: set only one"):
        from_dict(small_config(train={"epochs": 2}))  # both in the file is still a mistake


def test_error_names_the_key():
    with pytest.raises(ConfigError) as info:
        from_dict(small_config(), ["train.weight_decay=-0.1"])
    assert info.value.key == "train.weight_decay"


BOMB = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{c}: &{c} [{', '.join([f'*{p}'] * 10)}]\n" for p, c in zip("abcdefgh", "bcdefghi"))


@pytest.mark.parametrize("content,reason", [
    (b"\xff\xfe\x00t\x00r\x00a\x00i\x00n", "not UTF-8 text (byte 0xff at offset 0): not a config file"),
    (b"seed: 1\n\x00\x00", "holds NUL bytes"),
    (b"- data\n- model\n", "expected a mapping of sections (data, model, train, ...), got a list"),
    (b"just a string", "expected a mapping of sections (data, model, train, ...), got a str"),
    (BOMB.encode(), "expands to more than 100000 values through aliases"),
    (b"a: &a [*a]\n", "expands to more than 100000 values through aliases"),
    (b"[" * 3000 + b"]" * 3000, "nested too deeply"),
    (b"# padding\n" * 120000, "larger than 1 MiB"),
])
def test_files_that_are_not_configs_are_refused_in_one_line(tmp_path, content, reason):
    path = tmp_path / "c.yaml"
    path.write_bytes(content)
    with pytest.raises(ConfigError) as info:
        load(path)
    assert info.value.key == str(path) and reason in info.value.reason and "\n" not in str(info.value)


def test_not_a_config_under_mpi_is_one_line_before_any_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_bytes(BOMB.encode())
    proc = edgempi("run", str(path), "--out", str(tmp_path / "out"), ranks=2, timeout=120)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
        f"edgempi: config error: {path}: expands to more than 100000 values through aliases"]
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("where,reason", [
    ("data.root=ROOT/nowhere", "data.root ROOT/nowhere does not exist"),
    ("data.root=ROOT", "data.root ROOT lacks its four IDX files"),
    ("output.dir=ROOT/file/out", "cannot create output folder ROOT/file/out: Not a directory"),
])
def test_unusable_data_root_or_output_folder_is_one_line_and_writes_nothing(tmp_path, where, reason):
    (tmp_path / "file").write_text("a file, not a folder")
    path = write_config(tmp_path / "c.yaml", small_config(data={"name": "mnist"}, output={"name": "x"}))
    proc = edgempi("run", str(path), "--set", where.replace("ROOT", str(tmp_path)), ranks=2, timeout=120,
                   cwd=tmp_path)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert reason.replace("ROOT", str(tmp_path)) in lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.yaml", "file"]


@pytest.mark.parametrize("text,reason", [
    ("seed: 0\ntrain:\n  lr: 0.1\n  batch_size: 8\n  lr: 0.2\n", "key 'lr' is given twice (lines 3 and 5)"),
    ("train: {}\nseed: 1\ntrain:\n  lr: 0.1\n", "key 'train' is given twice (lines 1 and 3)"),
    ("train: {lr: 0.1, lr: 0.1}\n", "key 'lr' is given twice (lines 1 and 1)"),
])
def test_a_key_given_twice_is_refused_naming_it_and_both_lines(tmp_path, text, reason):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load(path)
    assert str(info.value) == f"{path}: {reason}"


def test_a_merge_key_may_be_overridden_and_a_set_value_may_not_repeat_a_key(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("base: &b {lr: 0.1, batch_size: 8}\n")
    from edgempi.util import yamltext

    assert yamltext.parse("a: &b {lr: 0.1, batch_size: 8}\nt:\n  <<: *b\n  lr: 0.2\n", "x") == {
        "a": {"lr": 0.1, "batch_size": 8}, "t": {"lr": 0.2, "batch_size": 8}}
    with pytest.raises(ConfigError, match=r"^train: value '\{lr: 1, lr: 2\}': key 'lr' is given twice"):
        from_dict(small_config(), ["train={lr: 1, lr: 2}"])


def test_a_sweep_file_that_repeats_a_key_is_one_line_and_exit_2(tmp_path):
    base = write_config(tmp_path / "c.yaml", small_config())
    sweep = tmp_path / "s.yaml"
    sweep.write_text(f"name: s\nbase: {base}\ngrid:\n  train.lr: [0.1]\n  seed: [1, 2]\n  train.lr: [0.2]\n")
    proc = edgempi("sweep", str(sweep), "--count", timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [f"edgempi: {sweep}: key 'train.lr' is given twice (lines 4 and 6)"]


@pytest.mark.parametrize("path", [".a:b", "a..b:c", ":b", "a.:b", "a:", "a:b:c", "1a:b", "a:1b", "os:path.join",
                                  " os:getcwd", "a b:c", "a-b:c"])
@pytest.mark.parametrize("key", ["model.name", "data.name", "algorithm.name", "compression.name"])
def test_every_malformed_dotted_path_is_one_line(path, key):
    with pytest.raises(ConfigError) as info:
        from_dict(small_config(), [f"{key}={path!r}"])
    assert str(info.value) == (f"{key}: {path!r} is not a dotted path package.module:attr (Python names joined by "
                               "single dots, one colon, one name)")


def test_a_plugin_module_that_fails_on_import_is_one_line(tmp_path, monkeypatch):
    (tmp_path / "broken_plugin.py").write_text("raise RuntimeError('no GPU here\\nsecond line')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ConfigError) as info:
        from_dict(small_config(), ["model.name=broken_plugin:build"])
    assert str(info.value) == ("model.name: importing 'broken_plugin' for 'broken_plugin:build' failed "
                               "(RuntimeError: no GPU here)")
