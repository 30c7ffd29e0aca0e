"""Does a change keep behaviour? Seeded runs of the existing configs before and after, compared
dataset by dataset apart from the timing columns.

    python benchmarks/same_results.py run /path/to/old-checkout results/before
    python benchmarks/same_results.py run . results/after
    python benchmarks/same_results.py compare results/before results/after

``run`` makes 15 short runs (40 steps) with the code of the given checkout: every method, a
compressor for each kind of exchange, spatial mode, virtual devices with partial
participation, stragglers with deadlines and jitter. ``compare`` prints one line per file and
exits 1 if any dataset, shape or run attribute differs. Timing columns (``compute_s``,
``comm_s``, ``wall_s``, ``sim_s``) are measured, so they are skipped, except ``sim_s`` of runs
whose simulated time comes from ``network.step_ms`` alone (``strag``, ``lbdpr``).
"""
from __future__ import annotations

import argparse
import os
import pathlib
import subprocess
import sys

import h5py
import numpy as np

TIMING = {"compute_s", "comm_s", "wall_s", "sim_s"}
SIM_FROM_CONFIG = {"strag", "lbdpr"}  # their sim_s is a function of the config and seed alone
ATTRS = ("status", "algorithm", "world_size", "devices", "evaluated_model")

QUICK = "benchmarks/configs/quickstart.yaml"
# One torch thread each: left to itself a run sizes its threads by how busy the machine is, and the
# sums of a one-rank run then differ in the 8th digit between a busy and an idle machine.
SHORT = ["train.epochs=null", "train.steps=40", "train.eval_every=20", "train.threads=1"]
# name: (ranks, config, overrides)
RUNS: dict[str, tuple[int, str, list[str]]] = {
    "lb": (4, QUICK, SHORT),
    "fedavg": (4, QUICK, [*SHORT, "algorithm.name=fedavg"]),
    "dynamic": (4, QUICK, [*SHORT, "algorithm.name=dynamic", "algorithm.delta=0.5"]),
    "dynbal": (4, QUICK, [*SHORT, "algorithm.name=dynamic", "algorithm.delta=0.5", "algorithm.balancing=true"]),
    "fdalin": (4, QUICK, [*SHORT, "algorithm.name=fda", "algorithm.theta=0.05"]),
    "fdanaive": (4, QUICK, [*SHORT, "algorithm.name=fda", "algorithm.variant=naive", "algorithm.theta=0.05"]),
    "fdasketch": (4, QUICK, [*SHORT, "algorithm.name=fda", "algorithm.variant=sketch", "algorithm.theta=0.05"]),
    "central": (1, QUICK, [*SHORT, "algorithm.name=centralized"]),
    "topk": (4, QUICK, [*SHORT, "compression.name=topk", "train.momentum=0.9"]),
    "fedqsgd": (4, QUICK, [*SHORT, "algorithm.name=fedavg", "compression.name=qsgd", "compression.levels=7"]),
    # Its groups pinned: groups: auto plans from layer timings measured at start-up, so two runs
    # of one code may fuse the layers differently (other halo bytes, other rounding).
    "spatial": (2, "benchmarks/configs/spatial.yaml", ["train.steps=10", "train.eval_every=5",
                                                       "parallel.groups=[[0, 6], [7, 13]]"]),
    "dpr": (2, QUICK, [*SHORT, "algorithm.name=fedavg", "parallel.devices_per_rank=3", "algorithm.participation=0.5"]),
    "dprfda": (2, QUICK, [*SHORT, "algorithm.name=fda", "parallel.devices_per_rank=2", "algorithm.theta=0.05",
                          "train.optimizer=adam", "train.lr=0.001"]),
    "strag": (4, QUICK, [*SHORT, "algorithm.name=fedavg", "network.step_ms=10", "network.spread=0.5",
                         "network.deadline_s=0.15", "network.jitter=0.3", "network.preset=4g"]),
    "lbdpr": (2, QUICK, [*SHORT, "parallel.devices_per_rank=2", "network.step_ms=5"]),
}


def run(root: pathlib.Path, out: pathlib.Path, extra: list[str]) -> int:
    """Every run of :data:`RUNS` with the code under ``root``; returns how many failed."""
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": "1"}
    failed = 0
    for name, (ranks, config, overrides) in RUNS.items():
        sets = [arg for kv in [*overrides, *extra, f"output.dir={out}", f"output.name={name}"] for arg in ("--set", kv)]
        cmd = ["mpiexec", "-n", str(ranks), sys.executable, "-m", "edgempi", "run", str(root / config), *sets,
               "--quiet"]
        with open(out / f"{name}.err", "w") as err:
            # cwd: `python -m` puts the working folder first on sys.path, ahead of PYTHONPATH
            code = subprocess.run(cmd, env=env, cwd=root, stdout=subprocess.DEVNULL, stderr=err).returncode
        print(f"{name}: {'ok' if code == 0 else f'exit {code}'}", flush=True)
        failed += code != 0
    return failed


def datasets(f: h5py.File) -> dict[str, h5py.Dataset]:
    found: dict[str, h5py.Dataset] = {}

    def keep(name: str, obj: object) -> None:  # visititems stops at the first callback that returns a value
        if isinstance(obj, h5py.Dataset):
            found[name] = obj
    f.visititems(keep)
    return found


def differences(a: pathlib.Path, b: pathlib.Path, new: set[str]) -> list[str]:
    """What differs between two results files of the same run, apart from timing columns;
    ``new``: datasets that only ``b`` may have (columns the change adds)."""
    found = []
    with h5py.File(a, "r") as x, h5py.File(b, "r") as y:
        da, db = datasets(x), datasets(y)
        if set(da) - set(db) or set(db) - set(da) - new:
            found.append(f"datasets differ: {sorted(set(da) ^ set(db))}")
        for name in sorted(set(da) & set(db)):
            column = name.rsplit("/", 1)[-1]
            if column in TIMING and not (column == "sim_s" and a.stem in SIM_FROM_CONFIG):
                continue
            u, v = da[name][()], db[name][()]
            same = u.shape == v.shape and (np.array_equal(u, v, equal_nan=True) if u.dtype.kind in "fc"
                                           else np.array_equal(u, v))
            if not same:
                found.append(f"{name} differs: {u.ravel()[:4]} against {v.ravel()[:4]}")
        found += [f"attribute {k}: {x.attrs.get(k)!r} against {y.attrs.get(k)!r}"
                  for k in ATTRS if x.attrs.get(k) != y.attrs.get(k)]
    return found


def compare(a: pathlib.Path, b: pathlib.Path, new: set[str]) -> int:
    """One line per file of ``a``; returns how many files differ or are missing in ``b``."""
    bad = 0
    for fa in sorted(a.glob("*.h5")):
        fb = b / fa.name
        found = differences(fa, fb, new) if fb.exists() else [f"missing in {b}"]
        print(f"{fa.name}: {'same' if not found else '; '.join(found)}")
        bad += bool(found)
    print("all the same" if bad == 0 else f"{bad} file(s) differ")
    return bad


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="the seeded runs with the code of a checkout")
    r.add_argument("root", type=pathlib.Path, help="the checkout whose code runs")
    r.add_argument("out", type=pathlib.Path, help="folder for the results files")
    r.add_argument("--set", dest="extra", action="append", default=[], metavar="KEY=VALUE",
                   help="added to every run, e.g. parallel.batched=off (a key the old code must know)")
    c = sub.add_parser("compare", help="two folders of results files of the same runs")
    c.add_argument("a", type=pathlib.Path)
    c.add_argument("b", type=pathlib.Path)
    c.add_argument("--new", action="append", default=[], metavar="DATASET",
                   help="a dataset only the second folder's files may have, e.g. evals/ctrl_bytes")
    args = p.parse_args()
    if args.command == "run":
        return int(run(args.root.resolve(), args.out.resolve(), args.extra) > 0)
    for folder in (args.a, args.b):
        if not folder.is_dir():
            print(f"same_results: {folder} is not a folder", file=sys.stderr)
            return 2
    return int(compare(args.a, args.b, set(args.new)) > 0)


if __name__ == "__main__":
    sys.exit(main())
