"""Dynamic averaging against FedAvg at equal bytes through concept drifts, with a figure.

Runs ``configs/drift/base.yaml`` with dynamic averaging, counts its syncs, then FedAvg with the
period (steps / syncs) that spends the same model bytes; plots test accuracy and each run's
syncs over steps (from /syncs and /evals), with the drift steps marked.

    EDGEMPI_DATA=../shared/datasets python benchmarks/drift.py [--devices 4] [--ranks 2] [--dry-run]
"""
from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
from pathlib import Path

import yaml
from launcher import mpiexec

from edgempi.record import open_for_reading

ROOT = Path(__file__).resolve().parent.parent
BASE = ROOT / "benchmarks" / "configs" / "drift" / "base.yaml"


def command(name: str, sets: list[str], out: Path, devices: int, ranks: int) -> list[str]:
    sets = [*sets, f"parallel.devices_per_rank={devices // ranks}", f"output.name={name}.h5"]
    return [mpiexec() or "mpiexec", "-n", str(ranks), sys.executable, "-m", "edgempi", "run", str(BASE),
            "--out", str(out), "--quiet", "--overwrite", *[a for s in sets for a in ("--set", s)]]


def read(path: Path) -> dict:
    with open_for_reading(path) as f:
        return {"step": f["evals/step"][()], "acc": f["evals/test_acc"][()], "syncs": f["syncs/step"][()],
                "bytes": f["evals/bytes_up"][()] + f["evals/bytes_down"][()]}


def figure(runs: dict[str, dict], drifts: list[int], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(7, 5), sharex=True, height_ratios=[3, 1])
    for i, (name, r) in enumerate(runs.items()):
        top.plot(r["step"], r["acc"], label=f"{name} ({len(r['syncs'])} syncs, {r['bytes'][-1] / 1e6:.1f} MB/device)")
        bottom.eventplot(r["syncs"], lineoffsets=i, linelengths=0.8, colors=f"C{i}")
    for ax in (top, bottom):
        for s in drifts:
            ax.axvline(s, color="grey", linestyle=":")
    top.set_ylabel("test accuracy")
    top.legend(loc="lower right")
    bottom.set_yticks(range(len(runs)), list(runs))
    bottom.set_xlabel("step (dotted: label permutation)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--devices", type=int, default=4)
    p.add_argument("--ranks", type=int, default=2)
    p.add_argument("--out", type=Path, default=ROOT / "results" / "drift")
    p.add_argument("--figure", type=Path, default=ROOT / "benchmarks" / "figures" / "drift-dynamic-fedavg.png")
    p.add_argument("--dry-run", action="store_true")
    args = p.parse_args()
    base = yaml.safe_load(BASE.read_text())
    steps, drifts = base["train"]["steps"], base["data"]["drift"]["steps"]
    dynamic = command("dynamic", [], args.out, args.devices, args.ranks)
    if args.dry_run:
        print(shlex.join(dynamic), "\nthen fedavg with algorithm.local_steps = steps / dynamic's syncs")
        return
    subprocess.run(dynamic, check=True, cwd=ROOT)
    syncs = len(read(args.out / "dynamic.h5")["syncs"])
    period = max(1, round(steps / max(1, syncs)))
    subprocess.run(command("fedavg", ["algorithm.name=fedavg", f"algorithm.local_steps={period}"], args.out,
                           args.devices, args.ranks), check=True, cwd=ROOT)
    runs = {"dynamic": read(args.out / "dynamic.h5"), f"fedavg (every {period})": read(args.out / "fedavg.h5")}
    figure(runs, drifts, args.figure)
    for name, r in runs.items():
        print(f"{name}: {summary(r, drifts, steps)}")


def summary(run: dict, drifts: list[int], steps: int) -> str:
    """Per segment between drifts: its syncs (and how many came in its first 100 steps), the accuracy
    25/50/100 steps into it and at its end (the last evaluation before the next drift); and the
    mean accuracy over the run."""
    parts = []
    for a, b in zip([0, *drifts], [*drifts, steps + 1]):
        syncs = int(((run["syncs"] > a) & (run["syncs"] <= b)).sum())
        early = int(((run["syncs"] > a) & (run["syncs"] <= a + 100)).sum())
        into = [f"{float(run['acc'][run['step'] == a + k][0]):.4f}" for k in (25, 50, 100)
                if (run["step"] == a + k).any()]
        end = float(run["acc"][run["step"] < b][-1])
        parts.append(f"steps {a}-{min(b, steps)}: {syncs} syncs ({early} in its first 100 steps), "
                     f"accuracy +25/+50/+100 {'/'.join(into)}, end {end:.4f}")
    return (f"{len(run['syncs'])} syncs, {run['bytes'][-1] / 1e6:.2f} MB/device, mean accuracy "
            f"{float(run['acc'].mean()):.4f}; " + "; ".join(parts))

if __name__ == "__main__":
    main()
