"""Peak memory and time per round with many virtual devices per rank (``parallel.devices_per_rank``),
the loop (``parallel.batched=off``) and the batched steps (``on``) side by side.

Each measurement is one job of the real CLI (``mpiexec -n RANKS python -m edgempi run``, through
this script's ``--child`` mode) for FedAvg, LeNet-5, real Fashion-MNIST, K devices on the job's
ranks, so every path's peak resident memory is its own (``ru_maxrss`` is a process's high-water
mark). Time per round is read from the run's own /steps rows (one per round). The loop and the
batched path alternate, repeat after repeat, and the medians are reported with the load
(``uptime``) seen around them. The peer is one device per rank (loop).

    python benchmarks/micro/devices.py --devices 100 1000 --repeats 3
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: launcher

from launcher import mpiexec  # noqa: E402

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "quickstart.yaml"


def child(devices: int, batched: str, rounds: int, local_steps: int, out: Path) -> None:
    """One run under mpiexec; rank 0 prints its figures as one JSON line."""
    from edgempi.cli import main
    from edgempi.comm import Comm
    from edgempi.record import open_for_reading

    comm = Comm()
    per_rank, name = devices // comm.size, f"k{devices}-{batched}"
    code = main(["run", str(CONFIG), "--out", str(out), "--overwrite", "--set", f"output.name={name}",
                 "--set", "algorithm.name=fedavg", "--set", f"algorithm.local_steps={local_steps}",
                 "--set", f"parallel.devices_per_rank={per_rank}", "--set", f"parallel.batched={batched}",
                 "--set", "train.epochs=null", "--set", f"train.steps={rounds * local_steps}",
                 "--set", f"train.log_every={local_steps}", "--set", f"train.eval_every={rounds * local_steps}",
                 "--set", "data.min_samples=1", "--set", "train.batch_size=16", "--set", "train.momentum=0.9"])
    if code != 0:
        raise SystemExit(f"edgempi run exited {code} for {devices} devices")
    peak_kib = max(comm.allgather_object(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss))
    if comm.rank == 0:
        with open_for_reading(out / f"{name}.h5") as f:
            wall = np.diff(f["steps"]["wall_s"][()])  # the first row's round includes start-up
            acc = float(f["evals"]["test_acc"][-1])
        per_round = statistics.median(wall.tolist())
        print(json.dumps({"s_per_round": per_round, "s_per_device_step": per_round / (per_rank * local_steps),
                          "peak_rss_mb": peak_kib / 1024, "test_acc": acc}), flush=True)


def measure(ranks: int, devices: int, batched: str, args: argparse.Namespace, out: Path) -> dict[str, float]:
    cmd = [mpiexec() or "mpiexec", "-n", str(ranks), sys.executable, __file__, "--child",
           str(devices), batched, "--rounds", str(args.rounds), "--local-steps", str(args.local_steps),
           "--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    if proc.returncode != 0:
        raise SystemExit(proc.stderr[-3000:])
    return json.loads([line for line in proc.stdout.splitlines() if line.startswith("{")][-1])


def load() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.split("load average:")[-1].strip()


def median_row(runs: list[dict[str, float]]) -> dict[str, float]:
    return {key: statistics.median(r[key] for r in runs) for key in runs[0]}


def main_bench() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--devices", type=int, nargs="+", default=[100, 1000])
    p.add_argument("--ranks", type=int, default=2)
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--local-steps", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--child", nargs=2, metavar=("DEVICES", "BATCHED"))
    args = p.parse_args()
    if args.child:
        return child(int(args.child[0]), args.child[1], args.rounds, args.local_steps, args.out)
    out = Path(tempfile.mkdtemp(prefix="edgempi-devices-"))
    try:
        peer = median_row([measure(args.ranks, args.ranks, "off", args, out) for _ in range(args.repeats)])
        print(json.dumps({"devices": args.ranks, "path": "peer (1 per rank)", **peer, "load": load()}), flush=True)
        for devices in args.devices:
            runs: dict[str, list[dict[str, float]]] = {"off": [], "on": []}
            loads = [load()]
            for _ in range(args.repeats):  # alternate, so a change of load hits both paths alike
                for batched in runs:
                    runs[batched].append(measure(args.ranks, devices, batched, args, out))
                loads.append(load())
            rows = {batched: median_row(r) for batched, r in runs.items()}
            for batched, row in rows.items():
                print(json.dumps({"devices": devices, "path": "loop" if batched == "off" else "batched", **row,
                                  "vs_peer": row["s_per_device_step"] / peer["s_per_device_step"],
                                  "speedup_vs_loop": rows["off"]["s_per_device_step"] / row["s_per_device_step"],
                                  "per_run_s_per_device_step": [r["s_per_device_step"] for r in runs[batched]],
                                  "loads": loads}), flush=True)
    finally:
        shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    main_bench()
