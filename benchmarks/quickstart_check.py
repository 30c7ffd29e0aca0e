"""Re-run the quickstart rows of benchmarks/docs/quickstart.md and check them against what it promises.

That page's table is what a new user is promised; this runs each of its rows
(`mpiexec -n 4 edgempi run benchmarks/configs/quickstart.yaml`, with the row's method) and
prints expected, measured and the difference, with the CPU and the versions the runs used.
Rounds and bytes are deterministic for a seed, a world size and the library versions, so any
difference there is drift (exit 1). Accuracy is as exact on one processor, but floating-point
kernels differ by CPU (vector width, fused multiply-add, the order of a sum), so its last
digits differ between processors: the table gives the range measured across CPUs, and a run
within --tolerance points of that range passes. The default is the band other seeds reach (a
CPU whose rounding sends SGD down another path can land anywhere in it; a broken install lands
far outside it). Wall time depends on the machine and is only shown.

    python benchmarks/quickstart_check.py [--out results/quickstart-check] [--tolerance 1.0]
"""
from __future__ import annotations

import argparse
import itertools
import platform
import re
import subprocess
import sys
from pathlib import Path

from launcher import mpiexec

from edgempi.analysis.runs import read_run

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "benchmarks" / "configs" / "quickstart.yaml"
PAGE = ROOT / "benchmarks" / "docs" / "quickstart.md"
COLUMNS = ("final test accuracy", "rounds", "MB up per device", "wall time")
HEADER = "| method | " + " | ".join(COLUMNS) + " |"
TOLERANCE = 1.0  # accuracy points beyond the range: large_batch with seeds 0-3 ended at 85.31-86.91%

Range = tuple[float, float]


def expected_rows(page: Path = PAGE) -> dict[str, dict[str, Range]]:
    """The table headed ``HEADER`` on the quickstart page: method → its promised values, each a
    (lowest, highest) range; a single number is a range of one."""
    lines = page.read_text(encoding="utf-8").splitlines()
    table = lines[lines.index(HEADER):] if HEADER in lines else []
    rows = {}
    for line in itertools.takewhile(lambda line: line.startswith("|"), table):
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        method = re.match(r"`(\w+)`", cells[0]) if len(cells) == len(COLUMNS) + 1 else None
        if method:
            rows[method.group(1)] = {name: _range(cell) for name, cell in zip(COLUMNS, cells[1:])}
    if not rows:
        sys.exit(f"no table headed {HEADER!r} found in {page}")
    return rows


def _range(cell: str) -> Range:
    """``85.91–86.07%`` → (85.91, 86.07); ``2,340`` → (2340, 2340)."""
    numbers = [float(n.replace(",", "")) for n in re.findall(r"\d[\d,]*(?:\.\d+)?", cell)]
    return min(numbers), max(numbers)


def cpu_model() -> str:
    """The processor the runs computed on: its floating-point kernels decide the last digits."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.split(":")[0].strip() in ("model name", "Model", "cpu model"):
                return f"{line.split(':', 1)[1].strip()} ({platform.machine()})"
    except OSError:
        pass
    return f"{platform.processor() or 'unknown'} ({platform.machine()})"


def measure(method: str, out: Path) -> tuple[dict[str, float], dict[str, str]]:
    """Run the quickstart with ``method`` on 4 ranks; its final row and the versions it ran with."""
    name = f"{method}.h5"
    subprocess.run([mpiexec() or "mpiexec", "-n", "4", sys.executable, "-m", "edgempi", "run", str(CONFIG),
                    "--out", str(out), "--quiet", "--overwrite", "--set", f"algorithm.name={method}",
                    "--set", f"output.name={name}"],
                   check=True, cwd=ROOT)
    run = read_run(out / name)
    last = {key: float(values[-1]) for key, values in run.evals.items()}
    measured = {"final test accuracy": 100 * last["test_acc"], "rounds": last["rounds"],
                "MB up per device": last["bytes_up"] / 1e6, "wall time": last["wall_s"]}
    return measured, run.attrs["versions"]


def off(expected: Range, measured: float) -> float:
    """How far ``measured`` lies outside the range ``expected`` (0 inside it)."""
    return max(expected[0] - measured, measured - expected[1], 0.0)


def drifted(name: str, expected: Range, measured: float, tolerance: float) -> bool:
    """Accuracy more than ``tolerance`` points outside its range; counts beyond their rounding."""
    if name == "wall time":
        return False
    slack = tolerance if name == "final test accuracy" else 0.05 if name == "MB up per device" else 0.5
    return off(expected, measured) > slack


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=ROOT / "results" / "quickstart-check")
    p.add_argument("--tolerance", type=float, default=TOLERANCE,
                   help=f"accuracy points allowed outside the range measured across CPUs (default {TOLERANCE})")
    args = p.parse_args()
    print(f"cpu: {cpu_model()}; accuracy passes within {args.tolerance} points of the table's range")
    failed = False
    for method, expected in expected_rows().items():
        measured, versions = measure(method, args.out)
        print(f"{method}:")
        for name in COLUMNS:
            bad = drifted(name, expected[name], measured[name], args.tolerance)
            failed |= bad
            low, high = expected[name]
            shown = f"{low:.2f}" if low == high else f"{low:.2f}–{high:.2f}"
            print(f"  {name:22s} expected {shown:>13s}  measured {measured[name]:10.2f}  "
                  f"outside by {off(expected[name], measured[name]):7.2f}"
                  f"{'  DRIFT' if bad else '  (the machine, not checked)' if name == 'wall time' else ''}")
    print("versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
