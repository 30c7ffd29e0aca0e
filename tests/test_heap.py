"""A training step's freed tensors stay in the process (edgempi.host.heap): the next step takes the
same memory again without a page fault, where glibc would hand each large block back to the
kernel and fault it in, zeroed, again."""
from __future__ import annotations

import subprocess
import sys

import pytest
from helpers import ROOT, child_env, self_comm, small_config

from edgempi import runner
from edgempi.config import from_dict

# Faults per batched LeNet-5 step of 16 devices (forward and backward), after a warm-up.
PROBE = """
import resource, sys, torch
from edgempi import batched, models
from edgempi.host.heap import keep_freed_memory
kept = keep_freed_memory() if sys.argv[1] == "keep" else None
torch.set_num_threads(1)
model = models.create("lenet5", in_channels=1, input_size=28)
stacked = batched.Stacked(model)
rows = torch.nn.utils.parameters_to_vector(model.parameters()).detach().repeat(16, 1)
images, labels = torch.randn(16, 32, 1, 28, 28), torch.randint(0, 10, (16, 32))
def step():
    leaf = rows.clone().requires_grad_()
    torch.autograd.grad(stacked.losses(leaf, images, labels).sum(), leaf)
for _ in range(5):
    step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    step()
print(kept, (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 10)
"""


def faults_per_step(mode: str) -> tuple[str, float]:
    proc = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, timeout=120,
                          env=child_env(), cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    kept, faults = proc.stdout.split()
    return kept, float(faults)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mallopt is glibc's")
def test_freed_tensors_are_reused_without_page_faults():
    kept, faults = faults_per_step("keep")
    _, default = faults_per_step("default")
    assert kept == "True"
    assert faults < 500  # 0–100 seen: the memory of the first steps is taken again
    assert default > 1000  # 2,000–5,900 seen: glibc's own way faults 8–23 MB in again each step


def test_a_run_keeps_freed_memory(monkeypatch, tmp_path):
    calls = []
    monkeypatch.setattr(runner, "keep_freed_memory", lambda: calls.append(True))
    cfg = from_dict(small_config(train={"steps": 2, "eval_every": 2, "log_every": 1}))
    runner.run(cfg, self_comm(), tmp_path / "run.h5", progress=False)
    assert calls == [True] and (tmp_path / "run.h5").exists()
