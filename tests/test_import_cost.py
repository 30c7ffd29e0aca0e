"""Checking a config imports neither torch, torchvision nor mpi4py: ``edgempi validate`` and the
config errors of ``edgempi run`` answer without the seconds those imports cost (docs/running.md).

A module on that path (config, registry, every method's and compressor's module, the data and
model packages) that imports torch at its top, or a model registered by object instead of by
dotted path, makes these tests fail."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
from analysis.runfiles import config as run_config
from analysis.runfiles import write_run
from helpers import ROOT, child_env, small_config, write_config

HEAVY = ("torch", "torchvision", "mpi4py")

# Runs the CLI in a fresh interpreter, then names the heavy modules that were really executed
# (a lazy_import placeholder that nothing read is a module of another type, not counted).
PROBE = """
import json, sys, types
{prelude}
from edgempi.cli import main
rc = main(sys.argv[1:])
loaded = sorted(n for n, m in list(sys.modules.items())
                if n.partition(".")[0] in {heavy!r} and type(m) is types.ModuleType)
print(json.dumps({{"rc": rc, "loaded": loaded}}))
"""


def probe(*args: str, prelude: str = "") -> dict:
    proc = subprocess.run([sys.executable, "-c", PROBE.format(prelude=prelude, heavy=HEAVY), *args],
                          capture_output=True, text=True, timeout=120, env=child_env(), cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    return {**json.loads(proc.stdout.splitlines()[-1]), "stdout": proc.stdout, "stderr": proc.stderr}


@pytest.mark.parametrize("config,extra", [
    ("benchmarks/configs/quickstart.yaml", []),
    ("benchmarks/configs/edgify-cifar10.yaml", []),  # resnet18 (torchvision), cifar10
    ("benchmarks/configs/spatial.yaml", []),  # spatial_vgg and the spatial mode, whose modules start MPI
    ("benchmarks/configs/quickstart.yaml", ["--set", "algorithm.name=fedavg", "--set", "algorithm.local_steps=2",
                                            "--set", "compression.name=powersgd", "--set", "model.name=densenet121",
                                            "--ranks", "4"]),
    ("benchmarks/configs/quickstart.yaml", ["--set", "algorithm.name=fda", "--set", "algorithm.variant=sketch",
                                            "--set", "data.name=synthetic", "--set", "train.steps=50",
                                            "--set", "data.drift.steps=[10]"]),
])
def test_validate_imports_no_torch_nor_mpi(config, extra):
    found = probe("validate", config, *extra)
    assert found["rc"] == 0, found["stderr"]
    assert found["loaded"] == []


@pytest.mark.parametrize("overrides,key", [
    (["train.lr=-1"], "train.lr"),
    (["model.name=lenet6"], "model.name"),
    (["algorithm.name=fedavg"], "algorithm.local_steps"),
    (["compression.name=topk", "compression.ratio=2"], "compression.ratio"),
])
def test_run_refuses_a_bad_config_before_importing_torch_or_mpi(tmp_path, overrides, key):
    config = write_config(tmp_path / "c.yaml", small_config())
    found = probe("run", str(config), "--out", str(tmp_path), *(a for o in overrides for a in ("--set", o)))
    assert found["rc"] == 2
    assert found["stderr"].startswith(f"edgempi: config error: {key}: ") and found["stderr"].count("\n") == 1
    assert found["loaded"] == []
    assert list(tmp_path.iterdir()) == [config]


def test_info_asks_the_files_parallel_mode_without_importing_torch_nor_mpi(tmp_path):
    """``edgempi info`` has the run's parallel mode say what its file records (a spatial run's
    layer groups), and reads no more of the mode than that."""
    cfg = run_config("large_batch", parallel={"mode": "spatial", "grid": [1, 2], "layers": 14})
    path = write_run(tmp_path / "s.h5", cfg, spatial_groups="[[0, 6], [7, 13]]")
    found = probe("info", str(path))
    assert found["rc"] == 0, found["stderr"]
    assert "  spatial layer groups: [[0, 6], [7, 13]]\n" in found["stdout"]
    assert found["loaded"] == []


def test_the_probe_sees_a_top_level_torch_import():
    found = probe("validate", "benchmarks/configs/quickstart.yaml", prelude="import torch; torch.zeros(1)")
    assert "torch" in found["loaded"]


def test_models_are_known_by_name_and_imported_on_first_use():
    script = """
import sys
from edgempi.registry import MODELS
from edgempi.settings import ConfigError
MODELS.check("resnet18")
assert "edgempi.models.resnet" not in sys.modules and "torchvision" not in sys.modules
for bad in ("resnet19", "no_such_package.nets:build"):
    try:
        MODELS.check(bad)
    except ConfigError as exc:
        assert exc.key == "model.name"
    else:
        raise AssertionError(bad)
from edgempi.models.resnet import resnet18
assert MODELS.get("resnet18") is resnet18 and MODELS.entries()["resnet18"] is resnet18
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                          env=child_env(), cwd=ROOT)
    assert proc.returncode == 0, proc.stderr


def test_lazy_import_is_the_module_once_read():
    script = """
import sys
from edgempi.util.lazy import lazy_import
torch = lazy_import("torch")
assert "torch._C" not in sys.modules
assert torch.ones(2).sum().item() == 2.0 and type(torch) is type(sys)
import torch as plain
assert plain is torch
assert lazy_import("torch") is torch
try:
    lazy_import("no_such_module_here")
except ModuleNotFoundError:
    pass
else:
    raise AssertionError("a missing module must fail at once")
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                          env=child_env(), cwd=ROOT)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("model,torchvision", [("lenet5", False), ("mlp", False), ("resnet18", True)])
def test_only_torchvisions_models_import_torchvision(model, torchvision):
    """A LeNet-5 run need not pay torchvision's import (~1–2 s of start-up: its ops load
    torch._dynamo); models built on torchvision's classes do."""
    code = (f"import sys; from edgempi import models; models.create({model!r}, in_channels=1, input_size=28); "
            "print('torchvision' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env=child_env(), cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(torchvision)


@pytest.mark.parametrize("settings", [
    {"algorithm": {"name": "fedavg", "local_steps": 5}, "parallel": {"devices_per_rank": 3},
     "train": {"momentum": 0.9, "nesterov": True}},  # virtual devices on the batched path
    {"algorithm": {"name": "fda", "theta": 1.0}, "train": {"optimizer": "adam"}},
])
def test_a_training_run_imports_no_dynamo(tmp_path, settings):
    """torch's optimizers import torch._dynamo on their first call (1.5–3 s of a rank's start-up,
    as long as torch's own import); edgempi's (edgempi.util.optim) must not."""
    config = write_config(tmp_path / "c.yaml", small_config(**settings))
    found = probe("run", str(config), "--out", str(tmp_path))
    assert found["rc"] == 0, found["stderr"]
    assert "torch.optim" in found["loaded"]
    assert "torch._dynamo" not in found["loaded"]
