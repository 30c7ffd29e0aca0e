"""edgempi beside Flower and pfl-research: the same FedAvg workload on each, alternating, measured alike.

    python benchmarks/peers/flower.py --devices 10 100 1000 --rounds 3 --repeats 3
    python benchmarks/peers/flower.py --devices 100 1000 --cohort 10 --engines edgempi flower pfl

Each run is a fresh command in its own session: edgempi's public CLI under ``mpiexec -n 2``
(``parallel.devices_per_rank`` = devices / 2), Flower's ``run_simulation`` (Ray, one actor
per core) through ``flower_app.py``, and pfl's simulated FedAvg under ``torchrun
--nproc_per_node=2`` through ``pfl_app.py``. They alternate, the order reversing with each
repeat. ``--cohort C`` trains C of the devices a round (edgempi's draw, which the peers are told):
every engine trains only those (edgempi's ``algorithm.cohort`` = C). For each run:

- ready: from launching the command to the end of the evaluation before round 1 (interpreter,
  imports, MPI or Ray, data, partition, model and that evaluation), read off a clock, nothing
  subtracted;
- start-up: from launching the command to the end of round 1, less one steady-state round, so
  it holds everything that is not training (what *ready* holds, and whatever round 1 spends
  warming up: Flower's actors load the data on their first message); where rounds vary by
  seconds (1,000 devices), so does this difference;
- seconds per round: the median over rounds 2 … R of the time between round ends;
- peak memory: the largest sum over all processes of the run's session (mpiexec, its proxy
  and ranks; Flower's driver, Ray's daemons and actors; torchrun and its workers), as resident set (RSS, counting shared
  libraries once per process) and as proportional set (PSS, shared pages split), sampled every
  0.25 s from /proc;
- the final test accuracy, which must agree between the engines;
- and, beside each repeat, ``mpiexec -n 2 python -c "import torch"``: what any engine running
  torch on two ranks pays before its first line of its own, the floor of edgempi's start-up.

Prints one JSON line per run as it ends, then a Markdown table of medians over the repeats,
one row per peer, with the peer's figure over edgempi's.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path[:0] = [str(HERE), str(HERE.parent), str(ROOT)]

from launcher import mpiexec  # noqa: E402
from runs import Run, launch  # noqa: E402
from workload import RANKS, edgempi_command, overrides  # noqa: E402

from edgempi.config import ConfigError  # noqa: E402
from edgempi.record import open_for_reading  # noqa: E402

ENGINES = ("edgempi", "flower", "pfl")
NAMES = {"flower": "Flower", "pfl": "pfl"}
SAME_ACCURACY = 0.005  # 50 test images of 10,000: float sums in another order, nothing more


def flower_command(devices: int, cohort: int | None, rounds: int, out: Path) -> list[str]:
    return [sys.executable, str(HERE / "flower_app.py"), "--devices", str(devices), "--cohort", str(cohort or devices),
            "--rounds", str(rounds), "--out", str(out)]


def pfl_command(devices: int, cohort: int | None, rounds: int, out: Path) -> list[str]:
    """torchrun, as pfl's simulation guide starts a PyTorch simulation on one machine's processes."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes=1", f"--nproc_per_node={RANKS}",
            str(HERE / "pfl_app.py"), "--devices", str(devices), "--cohort", str(cohort or devices),
            "--rounds", str(rounds), "--out", str(out)]


def run_edgempi(devices: int, cohort: int | None, rounds: int, work: Path, env: dict[str, str]) -> Run:
    """edgempi's round ends in wall-clock time: its progress line after the evaluation before
    round 1 fixes when that evaluation ended; the /steps rows (one per round) follow from there."""
    argv = edgempi_command(devices, rounds, work, mpiexec=mpiexec() or "mpiexec", cohort=cohort)
    launched, ended, lines, memory = launch(argv, env, work / f"edgempi-{devices}.log")
    first = next((t for t, text in lines if "edgempi: step 0/" in text), None)
    if first is None:
        raise RuntimeError(f"edgempi printed no evaluation before round 1; see {work / f'edgempi-{devices}.log'}")
    with open_for_reading(work / f"peers-{devices}.h5") as f:
        began = first - float(f["evals"]["wall_s"][0])
        round_ends = [began + float(w) for w in f["steps"]["wall_s"][()]]
        accuracy = float(f["evals"]["test_acc"][-1])
    return Run("edgempi", devices, launched, first, round_ends, ended, accuracy, *memory)


def run_peer(engine: str, devices: int, cohort: int | None, rounds: int, work: Path, env: dict[str, str]) -> Run:
    """A peer's app writes when its evaluation before round 1 and each round ended, and its accuracy."""
    out, log = work / f"{engine}-{devices}.json", work / f"{engine}-{devices}.log"
    out.unlink(missing_ok=True)
    launched, ended, _, memory = launch(COMMANDS[engine](devices, cohort, rounds, out), env, log)
    if not out.exists():
        raise RuntimeError(f"{NAMES[engine]} wrote no result; see {log}")
    result = json.loads(out.read_text())
    return Run(engine, devices, launched, result["ready"], result["round_ends"], ended, result["accuracy"], *memory)


COMMANDS = {"flower": flower_command, "pfl": pfl_command}


def torch_import_s(env: dict[str, str]) -> float:
    """Seconds from launching ``mpiexec -n 2 python -c "import torch"`` to its end."""
    launched = time.time()
    subprocess.run([mpiexec() or "mpiexec", "-n", str(RANKS), sys.executable, "-c", "import torch"], env=env,
                   check=True, capture_output=True)
    return time.time() - launched


def measure(args: argparse.Namespace, work: Path) -> tuple[list[Run], dict[int, list[float]]]:
    """Every device count, ``repeats`` times each engine, alternating which goes first, and the
    import of torch on two ranks after each repeat's runs (seconds, by device count)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(HERE), os.environ.get("PYTHONPATH", "")]),
           "RAY_TMPDIR": str(work)}
    runs: list[Run] = []
    imports: dict[int, list[float]] = {}
    for devices in args.devices:
        for repeat in range(args.repeats):
            order = args.engines if repeat % 2 == 0 else args.engines[::-1]
            for engine in order:
                run = (run_edgempi(devices, args.cohort, args.rounds, work, env) if engine == "edgempi"
                       else run_peer(engine, devices, args.cohort, args.rounds, work, env))
                print(json.dumps({**run.summary(), "repeat": repeat}), flush=True)
                runs.append(run)
            imports.setdefault(devices, []).append(torch_import_s(env))
            imported = {"import_torch_s": imports[devices][-1], "devices": devices, "repeat": repeat}
            print(json.dumps(imported), flush=True)
    return runs, imports


def median_of(runs: list[Run], engine: str, devices: int, key: str) -> float:
    return statistics.median(r.summary()[key] for r in runs if r.engine == engine and r.devices == devices)


def cell(m: dict[tuple[str, str], float], peer: str, key: str, fmt: str, ratio: bool = True) -> str:
    """``edgempi / peer`` for ``key``, with the peer's over edgempi's when both are positive (a
    start-up by subtraction is not where rounds vary by more than the warm-up)."""
    ours, theirs = m["edgempi", key], m[peer, key]
    text = f"{ours:{fmt}} / {theirs:{fmt}}"
    if not ratio:
        return text
    if ours <= 0 or theirs <= 0:
        return f"{text} (–)"
    return f"{text} ({theirs / ours:.1f}×)" if theirs >= ours else f"{text} ({theirs / ours:.2f}×)"


def table(runs: list[Run], devices: list[int], imports: dict[int, list[float]]) -> str:
    """Medians over the repeats, one row per device count and peer measured beside edgempi;
    ratios are the peer's figure over edgempi's."""
    lines = ["| devices | peer | ready s: edgempi / peer (ratio) | start-up s: edgempi / peer (ratio) "
             "| s per round: edgempi / peer (ratio) | peak RSS GB: edgempi / peer (ratio) "
             "| peak PSS GB: edgempi / peer (ratio) | accuracy: edgempi / peer | `import torch` on 2 ranks s "
             "| load (1 min) |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    measured = {r.engine for r in runs}
    for k in devices:
        m = {(e, key): median_of(runs, e, k, key) for e in measured
             for key in ("ready_s", "startup_s", "s_per_round", "peak_rss_gb", "peak_pss_gb", "accuracy")}
        loads = [r.load for r in runs if r.devices == k]
        lines += [
            f"| {k:,} | {NAMES[peer]} | {cell(m, peer, 'ready_s', '.1f')} | {cell(m, peer, 'startup_s', '.1f')} "
            f"| {cell(m, peer, 's_per_round', '.3g')} | {cell(m, peer, 'peak_rss_gb', '.2f')} "
            f"| {cell(m, peer, 'peak_pss_gb', '.2f')} | {cell(m, peer, 'accuracy', '.2%', False)} "
            f"| {statistics.median(imports[k]):.1f} | {min(loads):.1f}–{max(loads):.1f} |"
            for peer in NAMES if peer in measured]
    return "\n".join(lines)


def disagreements(runs: list[Run]) -> list[str]:
    """Runs of the same devices whose accuracies differ by more than float noise."""
    out = []
    for k in sorted({r.devices for r in runs}):
        accs = {r.accuracy for r in runs if r.devices == k}
        if max(accs) - min(accs) > SAME_ACCURACY:
            out.append(f"{k} devices: accuracies {sorted(accs)} differ by more than {SAME_ACCURACY:.1%}")
    return out


class Parser(argparse.ArgumentParser):
    """Bad input is one line and exit 2, without the usage text."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message}\n")


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = Parser(description=__doc__.splitlines()[0])
    p.add_argument("--devices", type=int, nargs="+", default=[10, 100, 1000])
    p.add_argument("--cohort", type=int, help="devices trained a round, drawn by edgempi's seed (default: all)")
    p.add_argument("--rounds", type=int, default=3, help="rounds per run (>= 2: round 1 holds the warm-up)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--engines", nargs="+", choices=ENGINES, default=list(ENGINES))
    p.add_argument("--dry-run", action="store_true", help="print the commands and the workload, run nothing")
    args = p.parse_args(argv)
    try:
        for devices in args.devices:
            overrides(devices, args.rounds, cohort=args.cohort)
    except ConfigError as exc:
        p.error(str(exc))
    if args.rounds < 2 or args.repeats < 1:
        p.error("--rounds must be >= 2 and --repeats >= 1")
    if "pfl" in args.engines and args.cohort and args.cohort % RANKS:
        p.error(f"pfl splits a cohort evenly over its {RANKS} processes: make --cohort a multiple of {RANKS}")
    for engine, module, extra in (("flower", "flwr", "peers"), ("pfl", "pfl", "pfl")):
        if engine in args.engines and not args.dry_run and importlib.util.find_spec(module) is None:
            p.error(f"{NAMES[engine]} is not installed: pip install -e '.[{extra}]' (or leave it out of --engines)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if args.dry_run:
        for devices in args.devices:
            print(" ".join(edgempi_command(devices, args.rounds, Path("OUT"), "mpiexec", cohort=args.cohort)))
            for peer in (e for e in args.engines if e in COMMANDS):
                out = Path("OUT") / f"{peer}-{devices}.json"
                print(" ".join(COMMANDS[peer](devices, args.cohort, args.rounds, out)))
        return 0
    work = Path(tempfile.mkdtemp(prefix="peers-"))
    try:
        runs, imports = measure(args, work)
    except RuntimeError as exc:
        print(f"flower.py: {exc}", file=sys.stderr)  # the logs stay for reading
        return 1
    if "edgempi" in args.engines and len(set(args.engines)) > 1:
        print(table(runs, args.devices, imports))
    problems = disagreements(runs)
    for line in problems:
        print(f"flower.py: {line}", file=sys.stderr)
    shutil.rmtree(work, ignore_errors=True)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
