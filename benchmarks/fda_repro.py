r"""Reproduce the FDA paper's comparison on Fashion-MNIST / LeNet-5, then tabulate it.

Runs every point of ``benchmarks/configs/fda/grid.yaml`` (base config + method + grid value,
for each device count and partition) with ``mpiexec -n K edgempi run``, one HDF5 file each,
and skips the runs whose file is already complete. The table reads each file's /evals: at the
first evaluation with test accuracy ≥ the target, the parallel steps, and the bytes up + down
summed over the K devices (the per-device means × K), plus the control bytes from /steps.

    python benchmarks/fda_repro.py --devices 4 8 --target 0.85            # run, then print the table
    python benchmarks/fda_repro.py --devices 4 --table-only               # table of the runs so far
    python benchmarks/fda_repro.py --devices 16 --max-ranks 2             # 16 devices as 2 ranks × 8
    python benchmarks/fda_repro.py --grid benchmarks/configs/fda/mnist-grid.yaml --target 0.98 --max-ranks 2 \
        --out results/fda-mnist                                            # the paper's MNIST setup (K = 5, 10)
    python benchmarks/fda_repro.py --grid benchmarks/configs/fda/paper/grid.yaml --max-ranks 2 \
        --out results/fda-paper                                            # the paper's table as its authors ran it
"""
from __future__ import annotations

import argparse
import itertools
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from edgempi import launch
from edgempi.analysis.report import to_target
from edgempi.analysis.runs import read_run, read_status

ROOT = Path(__file__).resolve().parent.parent
GRID = ROOT / "benchmarks" / "configs" / "fda" / "grid.yaml"


@dataclass
class Run:
    partition: str
    devices: int
    method: str
    point: str  # the grid value, e.g. "theta=2.0", or "" for a method without a grid
    overrides: list[str]
    config: Path  # the grid's base config, or the method's own (``config:`` in the grid)

    @property
    def name(self) -> str:
        return "-".join(filter(None, [self.partition, f"k{self.devices}", self.method, self.point]))


def expand(grid: dict, folder: Path, devices: list[int], partitions: list[str], methods: list[str] | None) -> list[Run]:
    """Every run of the grid file's ``methods`` (each ``base`` plus its ``set`` keys, or its own
    ``config``) at each grid point, device count and partition."""
    runs = []
    for partition, k in itertools.product(partitions, devices):
        for method, spec in grid["methods"].items():
            if methods and method not in methods:
                continue
            axes = spec.get("grid", {})
            for values in itertools.product(*axes.values()):
                point = [f"{key}={value}" for key, value in zip(axes, values)]
                label = ",".join(p.split(".", 1)[1] for p in point)
                sets = [*grid["partitions"][partition], *spec.get("set", []), *point]
                runs.append(Run(partition, k, method, label, sets, folder / spec.get("config", grid.get("base", ""))))
    return runs


def completed(path: Path) -> bool:
    return path.exists() and read_status(path) == "completed"


def command(run: Run, out: Path, extra: list[str], max_ranks: int | None, stop_at: float) -> list[str]:
    """The run on K ranks, or on the most ranks up to max_ranks that split K evenly: the same run
    (tests/mpi/test_devices.py) on fewer processes than a small machine can hold. It stops at
    the target (train.stop_at_acc = ``stop_at``): the table needs nothing after it."""
    mpiexec = launch.mpiexec() or "mpiexec"
    ranks = max(r for r in range(1, min(run.devices, max_ranks or run.devices) + 1) if run.devices % r == 0)
    sets = [*run.overrides, f"train.stop_at_acc={stop_at}", *extra, f"parallel.devices_per_rank={run.devices // ranks}",
            f"output.name={run.name}.h5"]
    return [mpiexec, "-n", str(ranks), sys.executable, "-m", "edgempi", "run", str(run.config), "--out", str(out),
            "--quiet", "--overwrite", *[a for s in sets for a in ("--set", s)]]


def execute(run: Run, cmd: list[str]) -> None:
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    status = "ok" if proc.returncode == 0 else f"FAILED ({proc.stderr.strip().splitlines()[-1:]})"
    print(f"{run.name}: {status} in {time.perf_counter() - start:.0f} s", flush=True)


def reached(path: Path, devices: int, target: float, strict: bool = False) -> dict[str, float]:
    """Parallel steps and bytes (all devices: the per-device means × K; model = up + down,
    ctrl = control) at the first evaluation with test_acc ≥ target (> target if ``strict``), as
    `edgempi report` counts them (an average scored between syncs charged one sync), and in the
    FDA paper's convention: (syncs + 1) × 2·K·4·d plus the control bytes, nothing charged."""
    run = read_run(path)
    acc = run.evals["test_acc"]
    row = {"best_acc": float(acc.max()), "final_acc": float(acc[-1]),
           "syncs_total": len(run.syncs.get("step", ()))}
    cost = to_target(run, target, strict)
    if cost is not None:
        at = int(np.flatnonzero(acc > target if strict else acc >= target)[0])
        syncs, up = float(run.evals["rounds"][at]), float(run.evals["bytes_up"][at])
        per_sync = up / syncs if syncs else 0.0  # 4·d bytes a device sends in one dense sync
        row.update(step=float(run.evals["step"][at]), rounds=syncs,
                   model_bytes=(cost["bytes_up"] + cost["bytes_down"]) * devices,
                   ctrl_bytes=cost["ctrl_bytes"] * devices,
                   paper_bytes=(syncs + 1) * 2 * devices * per_sync + cost["ctrl_bytes"] * devices)
    return row


def fmt_bytes(b: float) -> str:
    return f"{b / 1e6:,.1f} MB" if b >= 1e5 else f"{b / 1e3:,.1f} kB"


def table(runs: list[Run], out: Path, target: float, baselines: tuple[str, ...] = ("fedavg",), strict: bool = False,
          paper: dict | None = None) -> str:
    """Markdown: every run, then the cheapest grid point per method with the ratios of the issue
    and, where the grid gives the paper's figures, the paper's GB beside ours in its convention."""
    rule = ">" if strict else "≥"
    lines = [f"Target: the first test accuracy {rule} {target:.1%}; bytes = up + down summed over all devices "
             "(model = weight/gradient exchanges, ctrl = FDA state / violation counts), as `edgempi report` "
             "counts them; paper = the FDA paper's convention, (syncs + 1) × 2·K·4·d + ctrl.", "",
             "| partition | K | method | point | steps to target | syncs | model bytes | ctrl bytes | total | paper "
             "| best acc |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    best: dict[tuple[str, int, str], dict[str, float | str]] = {}
    for run in runs:
        path = out / f"{run.name}.h5"
        if not completed(path):
            continue
        r = reached(path, run.devices, target, strict)
        if "step" in r:
            total = r["model_bytes"] + r["ctrl_bytes"]
            cells = [f"{int(r['step'])}", f"{int(r['rounds'])}", fmt_bytes(r["model_bytes"]),
                     fmt_bytes(r["ctrl_bytes"]), fmt_bytes(total), fmt_bytes(r["paper_bytes"])]
            key = (run.partition, run.devices, run.method)
            if key not in best or total < best[key]["total"]:
                best[key] = {"total": total, "step": r["step"], "point": run.point, "paper_bytes": r["paper_bytes"]}
        else:
            cells = ["not reached", "", "", "", "", ""]
        lines.append(f"| {run.partition} | {run.devices} | {run.method} | {run.point or '-'} | {' | '.join(cells)} "
                     f"| {r['best_acc']:.4f} |")
    names = " / ".join(baselines)
    lines += ["", "Cheapest grid point per method (bytes to the target), and how many times fewer bytes "
              f"than the cheapest of {names} and than the synchronous reference"
              + ("; the paper's figure and ours in its convention:" if paper else ":"), "",
              f"| partition | K | method | point | steps | total bytes | × fewer than {names} "
              "| × fewer than synchronous"
              + (" | paper | ours (paper's convention) | ours / paper |" if paper else " |"),
              "| --- " * (11 if paper else 8) + "|"]
    for (partition, k, method), b in sorted(best.items(), key=lambda kv: (kv[0][:2], kv[1]["total"])):
        total = float(b["total"])
        fedavg = min((float(v["total"]) for (p, kk, m), v in best.items() if (p, kk) == (partition, k)
                      and m.startswith(baselines)), default=None)
        sync = best.get((partition, k, "large_batch")) or best.get((partition, k, "synchronous"))
        ratio = ["-" if not ref else f"{ref / total:.1f}" if total else "∞ (no bytes)"
                 for ref in (fedavg, float(sync["total"]) if sync else None)]
        cells = [partition, str(k), method, str(b["point"] or "-"), str(int(b["step"])), fmt_bytes(total), *ratio]
        if paper:
            theirs = paper.get(k, {}).get(method, {}).get("gb")
            ours = float(b["paper_bytes"])
            cells += [f"{theirs} GB" if theirs else "-", f"{ours / 1e9:.3g} GB",
                      f"{ours / 1e9 / theirs:.2f}" if theirs else "-"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--grid", type=Path, default=GRID)
    p.add_argument("--devices", type=int, nargs="+", help="device counts (default: the grid's)")
    p.add_argument("--partitions", nargs="+", default=["iid"], help="partitions of the grid to run")
    p.add_argument("--methods", nargs="+", help="methods of the grid to run (default: all)")
    p.add_argument("--points", nargs="+", metavar="KEY=VALUE",
                   help="grid points to run, e.g. theta=7.0 (default: all; methods without a grid always run)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override for every run")
    p.add_argument("--out", type=Path, default=ROOT / "results" / "fda")
    p.add_argument("--max-ranks", type=positive, help="run K devices on at most this many ranks "
                   "(parallel.devices_per_rank = K / ranks)")
    p.add_argument("--target", type=float, help="test accuracy to reach (default: the grid's target, else 0.85)")
    p.add_argument("--table-only", action="store_true", help="do not run, tabulate the files present")
    p.add_argument("--dry-run", action="store_true", help="list the runs and stop")
    args = p.parse_args()

    grid = yaml.safe_load(args.grid.read_text())
    runs = expand(grid, args.grid.parent, args.devices or grid["devices"], args.partitions, args.methods)
    runs = [r for r in runs if not args.points or not r.point or r.point in args.points]
    target = args.target if args.target is not None else grid.get("target", 0.85)
    strict = bool(grid.get("strict", False))
    # accuracies are multiples of 1e-4 on a 10,000-image test set
    stop_at = round(target + 1e-4, 10) if strict else target
    if args.dry_run:
        print("\n".join(f"{r.name}: {shlex.join(command(r, args.out, args.set, args.max_ranks, stop_at))}"
                        for r in runs))
        return
    if not args.table_only:
        for run in runs:
            if not completed(args.out / f"{run.name}.h5"):
                execute(run, command(run, args.out, args.set, args.max_ranks, stop_at))
    if not any(completed(args.out / f"{run.name}.h5") for run in runs):
        sys.exit(f"fda_repro: none of the {len(runs)} runs asked for has a completed file in {args.out}"
                 + (": run without --table-only first" if args.table_only else ""))
    print(table(runs, args.out, target, tuple(grid.get("baselines", ["fedavg"])), strict, grid.get("paper")))


if __name__ == "__main__":
    main()
