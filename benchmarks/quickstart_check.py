"""Re-run the quickstart rows of benchmarks/README.md and print how far today's results drift.

The README's "Quickstart" table is what a new user is promised; this runs each of its rows
(`mpiexec -n 4 edgempi run benchmarks/configs/quickstart.yaml`, with the row's method) and
prints expected, measured and the difference, with the versions the runs used. Accuracy,
rounds and bytes are deterministic for a seed, a world size and the library versions, so any
difference there is drift (exit 1); wall time depends on the machine and is only shown.

    python benchmarks/quickstart_check.py [--out results/quickstart-check] [--tolerance 0.1]
"""
from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from pathlib import Path

from edgempi.analysis.runs import read_run

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "benchmarks" / "configs" / "quickstart.yaml"
README = ROOT / "benchmarks" / "README.md"
COLUMNS = ("final test accuracy", "rounds", "MB up per device", "wall time")


def expected_rows(readme: Path = README) -> dict[str, dict[str, float]]:
    """The Quickstart table of the benchmarks README: method → its promised values."""
    section = readme.read_text().split("\n## Quickstart\n", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        method = re.match(r"`(\w+)`", cells[0]) if len(cells) == len(COLUMNS) + 1 else None
        if method:
            rows[method.group(1)] = {name: float(re.sub(r"[^0-9.]", "", cell))
                                     for name, cell in zip(COLUMNS, cells[1:])}
    if not rows:
        sys.exit(f"no Quickstart table found in {readme}")
    return rows


def measure(method: str, out: Path) -> tuple[dict[str, float], dict[str, str]]:
    """Run the quickstart with ``method`` on 4 ranks; its final row and the versions it ran with."""
    mpiexec = shutil.which("mpiexec", path=str(Path(sys.executable).parent)) or "mpiexec"
    name = f"{method}.h5"
    subprocess.run([mpiexec, "-n", "4", sys.executable, "-m", "edgempi", "run", str(CONFIG), "--out", str(out),
                    "--quiet", "--overwrite", "--set", f"algorithm.name={method}", "--set", f"output.name={name}"],
                   check=True, cwd=ROOT)
    run = read_run(out / name)
    last = {key: float(values[-1]) for key, values in run.evals.items()}
    measured = {"final test accuracy": 100 * last["test_acc"], "rounds": last["rounds"],
                "MB up per device": last["bytes_up"] / 1e6, "wall time": last["wall_s"]}
    return measured, run.attrs["versions"]


def drifted(name: str, expected: float, measured: float, tolerance: float) -> bool:
    """Accuracy within ``tolerance`` points (its last printed digit), counts within rounding."""
    if name == "wall time":
        return False
    slack = tolerance if name == "final test accuracy" else 0.05 if name == "MB up per device" else 0.5
    return abs(measured - expected) > slack


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=ROOT / "results" / "quickstart-check")
    p.add_argument("--tolerance", type=float, default=0.01, help="accuracy drift allowed, in points")
    args = p.parse_args()
    failed = False
    for method, expected in expected_rows().items():
        measured, versions = measure(method, args.out)
        print(f"{method}:")
        for name in COLUMNS:
            bad = drifted(name, expected[name], measured[name], args.tolerance)
            failed |= bad
            print(f"  {name:22s} expected {expected[name]:10.2f}  measured {measured[name]:10.2f}  "
                  f"difference {measured[name] - expected[name]:+9.2f}{'  DRIFT' if bad else ''}")
    print("versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
