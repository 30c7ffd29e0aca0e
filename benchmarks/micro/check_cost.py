"""What checking a config costs: ``edgempi validate CONFIG`` as it is (no torch, no MPI) against
the same call in a process that imports torch and torchvision first (what every check cost
before they were imported lazily), alternating, N repeats each; wall and CPU (user + sys)
seconds of each child process, medians.

    python benchmarks/micro/check_cost.py [CONFIG] [N]
"""
import argparse
import os
import resource
import statistics
import subprocess
import sys
import time

ARGS = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
ARGS.add_argument("config", nargs="?", default="benchmarks/configs/quickstart.yaml", help="(default: %(default)s)")
ARGS.add_argument("n", nargs="?", type=int, default=5, help="repeats of each way (default: 5)")
PARSED = ARGS.parse_args()
CONFIG, N = PARSED.config, PARSED.n
if not os.path.isfile(CONFIG):
    ARGS.error(f"{CONFIG}: no such file")
VALIDATE = "import sys; from edgempi.cli import main; sys.exit(main(['validate', sys.argv[1]]))"
WAYS = {"edgempi validate": VALIDATE, "with torch imported first": "import torch, torchvision; " + VALIDATE}


def child_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def once(code: str) -> tuple[float, float]:
    cpu, wall = child_cpu(), time.perf_counter()
    subprocess.run([sys.executable, "-c", code, CONFIG], check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - wall, child_cpu() - cpu


print(f"load before: {os.getloadavg()[0]:.2f}")
times: dict[str, list[tuple[float, float]]] = {way: [] for way in WAYS}
for _ in range(N):
    for way, code in WAYS.items():
        times[way].append(once(code))
print(f"load after: {os.getloadavg()[0]:.2f}")
print("| how | wall s (median) | CPU s (median) |\n| --- | --- | --- |")
for way, runs in times.items():
    print(f"| {way} | {statistics.median(w for w, _ in runs):.2f} | {statistics.median(c for _, c in runs):.2f} |")
