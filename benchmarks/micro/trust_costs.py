"""What the safety of issue 14 costs: checkpoint save/load of a ResNet-18 state with and without
checksums and the weights-only loader, the output lock, the per-row disk check, the read-back
at close, a results file read in process and through the guard. Median of N repetitions.

    CPU=1 python benchmarks/micro/trust_costs.py [TMPDIR]   # CPU=1: process time, not wall time
"""
import argparse
import hashlib
import io
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

from edgempi import checkpoint, models, record
from edgempi.flat import FlatModel

ARGS = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
ARGS.add_argument("tmpdir", nargs="?", type=Path, help="a folder for the scratch files (default: the system's)")
TMPDIR = ARGS.parse_args().tmpdir
if TMPDIR is not None and not TMPDIR.is_dir():
    ARGS.error(f"{TMPDIR}: no such folder")

CLOCK = time.process_time if os.environ.get("CPU") else time.perf_counter
def med(fn, n=7):
    ts = []
    for _ in range(n):
        t = CLOCK()
        fn()
        ts.append(CLOCK() - t)
    return statistics.median(ts)

torch.manual_seed(0)
flat = FlatModel(models.create("resnet18", num_classes=10, in_channels=3, input_size=32, norm="batch"))
opt = torch.optim.SGD([flat.params], lr=0.1, momentum=0.9)
flat.params.grad = torch.randn_like(flat.params)
opt.step()
state = {"step": 10, "storage": flat.storage.clone(), "optimizer": opt.state_dict(), "torch_rng": torch.get_rng_state(),
         "ledger": {"rounds": 3, "segments": [0.1] * 10}}
tmp = Path(tempfile.mkdtemp(dir=TMPDIR))
old_path = tmp / "old.pt"
save_old = med(lambda: torch.save(state, old_path))
new_path = tmp / "rank0-step10.pt"
entry = {}
def save_new():
    entry.update(checkpoint._write_rank_file(new_path, {**checkpoint._encode(state), "header": {}}))
save_new_t = med(save_new)
data = new_path.read_bytes()
sha = med(lambda: hashlib.sha256(data).hexdigest())
load_old = med(lambda: torch.load(old_path, weights_only=False))
meta = {"step": 10, "world_size": 1, "config_hash": "h", "files": [entry]}
def load_new():
    d = new_path.read_bytes()
    assert hashlib.sha256(d).hexdigest() == entry["sha256"]
    checkpoint._decode(torch.load(io.BytesIO(d), weights_only=True))
load_new_t = med(load_new)
print(f"ResNet-18 state {len(data)/1e6:.1f} MB: save {save_old*1e3:.0f} ms -> {save_new_t*1e3:.0f} ms; "
      f"load {load_old*1e3:.0f} ms -> {load_new_t*1e3:.0f} ms; sha256 alone {sha*1e3:.0f} ms")

lock_t = med(lambda: record.OutputLock(tmp / "r.h5").release(), n=51)
print(f"lock acquire+release {lock_t*1e6:.0f} us")

cols = {"steps": record.STEP_COLUMNS}
r = record.Recorder(tmp / "a.h5", {}, cols)
row = {c: 1.0 for c in record.STEP_COLUMNS}
per_row = med(lambda: [r.append("steps", row) for _ in range(200)], n=5) / 200
reserve = med(lambda: [r.reserve() for _ in range(10000)], n=5) / 10000
r.close("completed")
close = med(lambda: record.check_complete(tmp / "a.h5", "completed", cols), n=5)
print(f"append+flush {per_row*1e6:.0f} us/row, of which the disk check {reserve*1e6:.1f} us; "
      f"read-back check at close {close*1e3:.1f} ms")
