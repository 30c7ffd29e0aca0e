"""Cross-device scale: seconds per round, peak memory per rank and start-up against the population.

    python benchmarks/cohort_scale.py                      # the sweep of benchmarks/docs/cohort.md
    python benchmarks/cohort_scale.py --cases 50 5000 --repeats 3
    python benchmarks/cohort_scale.py --dry-run            # the commands, nothing run

Each case is a population P with a cohort C (``algorithm.cohort``) on 2 ranks, FedAvg on
LeNet-5 (benchmarks/configs/cohort-scale.yaml): Fashion-MNIST split over P devices by the
case's partition (``dirichlet:P``, label skew at α = 0.5; ``quantity:P``, lognormal size skew),
or, for the cases given as ``synthetic/PARTITION:P``, 200,000 synthetic images (a set no larger or smaller
with P, so only the population changes). Every run is edgempi's public CLI under
``mpiexec -n 2``, one torch thread per rank, in a session of its own; the cases alternate, the
order reversing each repeat. Per run:

- start-up: from launching ``mpiexec`` to the training loop's start (interpreter, imports, MPI,
  data, partition, seeds, model), as edgempi's record dates it (the progress line of the
  evaluation before round 1, less that evaluation's own time);
- seconds per round: the median over rounds 2 … R of the time between round ends (/steps' wall_s);
- peak RSS per rank: the kernel's high-water mark (VmHWM) of each rank, the larger of the two.

Prints one JSON line per run, then a Markdown table of medians over the repeats.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(HERE), str(HERE / "peers"), str(ROOT)]

from launcher import mpiexec  # noqa: E402
from runs import end_session, session_pids  # noqa: E402

from edgempi.record import open_for_reading  # noqa: E402

CONFIG = HERE / "configs" / "cohort-scale.yaml"
RANKS = 2
LOCAL_STEPS = 10
SYNTHETIC_IMAGES = 200_000
DEFAULT_CASES = ["dirichlet:50", "dirichlet:1000", "dirichlet:5000", "quantity:10000", "synthetic/quantity:100",
                 "synthetic/quantity:100000"]


def case(text: str) -> tuple[str, str, int]:
    """(data, partition, P) of ``[synthetic/]PARTITION:P`` (Fashion-MNIST unless synthetic)."""
    head, _, population = text.rpartition(":")
    data, _, partition = head.rpartition("/")
    if partition not in ("dirichlet", "quantity", "iid") or data not in ("", "synthetic"):
        raise ValueError(text)
    return data or "fashion-mnist", partition, int(population.replace(",", "").replace("_", ""))


def command(text: str, args: argparse.Namespace, out: Path) -> list[str]:
    data, partition, population = case(text)
    cohort = args.synthetic_cohort if data == "synthetic" else args.cohort
    steps = args.rounds * LOCAL_STEPS
    sets = [f"parallel.devices_per_rank={population // RANKS}", f"algorithm.cohort={cohort}",
            f"train.steps={steps}", f"train.eval_every={steps}", f"data.partition={partition}",
            f"data.name={data}", "output.name=run"]
    if data == "synthetic":
        sets.append(f"data.synthetic_train={SYNTHETIC_IMAGES}")
    if partition != "dirichlet":
        sets.append("data.alpha=null")
    return [mpiexec() or "mpiexec", "-n", str(RANKS), sys.executable, "-m", "edgempi", "run", str(CONFIG),
            "--out", str(out), "--overwrite", *[a for s in sets for a in ("--set", s)]]


class PeakPerProcess(threading.Thread):
    """Each edgempi rank's VmHWM (the kernel's peak RSS of it), read until :meth:`stop`."""

    def __init__(self, sid: int) -> None:
        super().__init__(daemon=True)
        self.sid, self.peaks = sid, {}
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            for pid in session_pids(self.sid):
                try:
                    if b"edgempi" not in Path(f"/proc/{pid}/cmdline").read_bytes():
                        continue
                    status = Path(f"/proc/{pid}/status").read_text()
                except OSError:
                    continue
                hwm = next((int(line.split()[1]) * 1024 for line in status.splitlines()
                            if line.startswith("VmHWM:")), 0)
                if "mpiexec" not in Path(f"/proc/{pid}/comm").read_text():
                    self.peaks[pid] = max(self.peaks.get(pid, 0), hwm)
            self.done.wait(0.2)

    def stop(self) -> list[int]:
        self.done.set()
        self.join()
        return sorted(self.peaks.values())


def run_once(text: str, args: argparse.Namespace, work: Path) -> dict[str, float | str]:
    import subprocess

    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    load = os.getloadavg()[0]
    lines: list[tuple[float, str]] = []
    launched = time.time()
    proc = subprocess.Popen(command(text, args, work), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env, start_new_session=True)
    sampler = PeakPerProcess(proc.pid)
    sampler.start()
    assert proc.stdout is not None
    lines.extend((time.time(), line) for line in proc.stdout)
    code = proc.wait()
    peaks = sampler.stop()
    end_session(proc.pid)
    log = work / f"{text.replace(':', '-').replace('/', '-')}.log"
    log.write_text("".join(line for _, line in lines))
    first = next((t for t, line in lines if "edgempi: step 0/" in line), None)
    if code != 0 or first is None:
        raise RuntimeError(f"{text}: edgempi exited {code}; its output is in {log}")
    with open_for_reading(work / "run.h5") as f:
        began = first - float(f["evals"]["wall_s"][0])
        ends = [float(w) for w in f["steps"]["wall_s"][()]]
    rounds = [b - a for a, b in zip(ends, ends[1:])]
    return {"case": text, "startup_s": began - launched, "s_per_round": statistics.median(rounds),
            "peak_rss_rank_mb": max(peaks) / 1e6, "peak_rss_ranks_mb": [p / 1e6 for p in peaks], "load": load}


def table(runs: list[dict], cases: list[str], args: argparse.Namespace) -> str:
    lines = ["| data | partition | population P | cohort C | start-up s | s per round | peak RSS per rank MB "
             "| load (1 min) |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for text in cases:
        mine = [r for r in runs if r["case"] == text]
        data, partition, population = case(text)
        cohort = args.synthetic_cohort if data == "synthetic" else args.cohort
        med = {k: statistics.median(r[k] for r in mine) for k in ("startup_s", "s_per_round", "peak_rss_rank_mb")}
        loads = [r["load"] for r in mine]
        lines.append(f"| {data} | {partition} | {population:,} | {cohort} | {med['startup_s']:.1f} "
                     f"| {med['s_per_round']:.2f} | {med['peak_rss_rank_mb']:.0f} "
                     f"| {min(loads):.1f}–{max(loads):.1f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cases", nargs="+", default=DEFAULT_CASES,
                   help="[synthetic/]PARTITION:P, PARTITION dirichlet, quantity or iid")
    p.add_argument("--cohort", type=int, default=50)
    p.add_argument("--synthetic-cohort", type=int, default=100)
    p.add_argument("--rounds", type=int, default=4, help="rounds per run (>= 2: round 1 holds the warm-up)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--dry-run", action="store_true")
    args = p.parse_args(argv)
    try:
        for text in args.cases:
            case(text)
    except ValueError:
        p.error(f"--cases: each is [synthetic/]PARTITION:P (dirichlet, quantity or iid), got {args.cases}")
    if args.rounds < 2 or args.repeats < 1:
        p.error("--rounds must be >= 2 and --repeats >= 1")
    if args.dry_run:
        for text in args.cases:
            print(" ".join(command(text, args, Path("OUT"))))
        return 0
    work = Path(tempfile.mkdtemp(prefix="cohort-scale-"))
    runs = []
    try:
        for repeat in range(args.repeats):
            for text in args.cases if repeat % 2 == 0 else args.cases[::-1]:
                runs.append({**run_once(text, args, work), "repeat": repeat})
                print(json.dumps(runs[-1]), flush=True)
    except RuntimeError as exc:
        print(f"cohort_scale.py: {exc}", file=sys.stderr)
        return 1
    print(table(runs, args.cases, args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
