"""Peak memory and time per round with many virtual devices per rank (``parallel.devices_per_rank``).

Runs the real CLI (``edgempi run``) for FedAvg, LeNet-5, real Fashion-MNIST, K devices on the
job's ranks, then reports each rank's peak resident memory and the wall time per round (read
from the run's own /steps rows, one per round). The peer, measured in the same job first, is
the same config with one device per rank, so the ratio "seconds per device-step" shows what
keeping and swapping many devices costs beyond their compute.

    mpiexec -n 2 python benchmarks/micro/devices.py --devices 100 1000
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import tempfile
from pathlib import Path

import numpy as np

from edgempi.cli import main
from edgempi.comm import Comm
from edgempi.record import open_for_reading

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "quickstart.yaml"


def run_once(devices: int, comm: Comm, rounds: int, local_steps: int, out: Path) -> dict[str, float] | None:
    """The run's figures on rank 0 (None elsewhere: only the writer's rank knows the file is final)."""
    per_rank = devices // comm.size
    name = f"k{devices}"
    code = main(["run", str(CONFIG), "--out", str(out), "--overwrite", "--set", f"output.name={name}",
                 "--set", "algorithm.name=fedavg", "--set", f"algorithm.local_steps={local_steps}",
                 "--set", f"parallel.devices_per_rank={per_rank}", "--set", "train.epochs=null",
                 "--set", f"train.steps={rounds * local_steps}", "--set", f"train.log_every={local_steps}",
                 "--set", f"train.eval_every={rounds * local_steps}", "--set", "data.min_samples=1",
                 "--set", "train.batch_size=16", "--set", "train.momentum=0.9"])
    if code != 0:
        raise SystemExit(f"edgempi run exited {code} for {devices} devices")
    if comm.rank != 0:
        return None
    with open_for_reading(out / f"{name}.h5") as f:
        wall = np.diff(f["steps"]["wall_s"][()])  # the first row's round includes start-up
        acc = float(f["evals"]["test_acc"][-1])
    per_round = statistics.median(wall.tolist())
    return {"devices": devices, "per_rank": per_rank, "s_per_round": per_round,
            "s_per_device_step": per_round / (per_rank * local_steps), "test_acc": acc}


def main_bench() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--devices", type=int, nargs="+", default=[100, 1000])
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--local-steps", type=int, default=2)
    args = p.parse_args()
    comm = Comm()
    out = Path(comm.broadcast_object(tempfile.mkdtemp(prefix="edgempi-devices-") if comm.rank == 0 else None))
    rows = []
    for devices in [comm.size, *args.devices]:  # the peer first: one device per rank
        row = run_once(devices, comm, args.rounds, args.local_steps, out)
        # ru_maxrss is the process's high-water mark so far (KiB on Linux): runs go from small to large.
        peak_kib = max(comm.allgather_object(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss))
        if row is not None:
            rows.append({**row, "peak_rss_mb": peak_kib / 1024})
    for row in rows:  # rank 0's
        print(json.dumps({**row, "ratio_vs_one_device": row["s_per_device_step"] / rows[0]["s_per_device_step"]}))


if __name__ == "__main__":
    main_bench()
