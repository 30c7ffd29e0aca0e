"""``edgempi run|validate|partition|sweep|report|plot|info``: parse the command line, then call the library.

Exit codes: 0 done, 1 the run failed while training (also: its results or checkpoints could
not be written, or a rank stalled), 2 bad input (config, data, paths, checkpoints, a results
file another job writes), 130 stopped by SIGINT (Ctrl-C), 143 by SIGTERM or SIGUSR1.

This module imports little at its top, so that the commands that train note stop signals
(:func:`edgempi.watchdog.install`) before the seconds of importing torch and starting MPI.
"""
from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgempi import __version__, watchdog
from edgempi.settings import ConfigError, printable
from edgempi.util.progress import write_line

if TYPE_CHECKING:
    from edgempi.comm import Comm
    from edgempi.config import RunConfig


class CliError(Exception):
    """Bad input: printed as ``edgempi: <message>`` with exit code 2."""


def launcher_rank() -> int:
    """This process's rank as the launcher set it, read before MPI starts (0 when not launched).

    Every rank validates the same config, so only rank 0 prints the error: one line, not N.
    """
    for var in ("PMI_RANK", "OMPI_COMM_WORLD_RANK", "PMIX_RANK", "SLURM_PROCID"):
        if os.environ.get(var, "").isdigit():
            return int(os.environ[var])
    return 0


def _config(args: argparse.Namespace) -> RunConfig:
    from edgempi.config import load

    overrides = list(args.set)
    if getattr(args, "out", None):
        overrides.append(f"output.dir={args.out}")
    try:
        return load(args.config, overrides)
    except ConfigError as exc:
        raise CliError(f"config error: {exc}") from exc


def cmd_validate(args: argparse.Namespace) -> int:
    cfg = _config(args)
    if args.ranks is not None:
        from edgempi.config import validate_world

        try:
            validate_world(cfg, args.ranks)
        except ConfigError as exc:
            raise CliError(f"config error: {exc}") from exc
    print(f"{args.config}: ok ({cfg.algorithm.name}, {cfg.model.name} on {cfg.data.name})")
    return 0


def _on_every_rank(work: Callable[[Comm], object], result: Path | None = None) -> int:
    """Start MPI and run ``work`` on every rank under the failure rules, then print ``result``
    (rank 0): refusals are one line and exit 2; a stop on a signal exits 130 or 143 (checkpoint
    saved); any other error aborts the whole job; a signal or a stall that the ranks cannot act
    on together ends it by the watchdog.

    Every line goes out whole (``write_line``), so the results path never joins a progress
    line when stdout and stderr share one pipe or log file."""
    from edgempi.checkpoint import Interrupted
    from edgempi.comm import Comm  # initialises MPI: only for commands that train
    from edgempi.record import OutputError
    from edgempi.runner import SetupError
    from edgempi.sweep import SweepError
    from edgempi.train import TrainingError

    comm = Comm()
    watchdog.start(comm)
    try:
        work(comm)
    except Interrupted as exc:
        if comm.rank == 0:
            write_line(f"edgempi: {exc}")
        return exc.code
    except (ConfigError, SetupError, SweepError) as exc:
        prefix = "config error: " if isinstance(exc, ConfigError) else ""
        raise CliError(f"{prefix}{exc}") from exc
    except (TrainingError, OutputError) as exc:  # decided on reduced values: every rank stops here together
        if comm.rank == 0:
            write_line(f"edgempi: {exc}")
        return 1
    except Exception as exc:  # any rank: say which, then take the whole job down
        write_line(f"edgempi: rank {comm.rank}: {type(exc).__name__}: {exc}")
        watchdog.abort(comm, 1)
        return 1
    finally:
        watchdog.stop()
    if comm.rank == 0 and result is not None:
        write_line(str(result), sys.stdout)
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    cfg = _config(args)
    from edgempi.runner import results_path, run

    path = results_path(cfg, Path(args.config).stem)
    return _on_every_rank(partial(run, cfg, path=path, overwrite=args.overwrite, progress=not args.quiet,
                                  resume=args.resume, keep_checkpoints=args.keep_checkpoints), path)


def cmd_sweep(args: argparse.Namespace) -> int:
    from edgempi import sweep

    if args.task is None:  # listing and counting need no MPI
        try:
            return sweep.command(args, run_config=None, start_comm=None)
        except sweep.SweepError as exc:
            raise CliError(str(exc)) from exc

    def task(comm: Comm) -> None:
        from edgempi.runner import run

        def run_point(base: Any, overrides: Sequence[str], out_file: Path, resume: bool = False) -> None:
            from edgempi.config import from_dict, load

            where = [*overrides, f"output.dir={out_file.parent}", f"output.name={out_file.name}"]
            cfg = from_dict(base, where) if isinstance(base, dict) else load(base, where)
            run(cfg, comm, out_file, progress=not args.quiet, resume=resume)

        sweep.command(args, run_point, lambda: comm)

    return _on_every_rank(task)


def _analysis(handler: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    def call(args: argparse.Namespace) -> int:
        try:
            return handler(args)
        except ValueError as exc:
            raise CliError(str(exc)) from exc
    return call


def cmd_partition(args: argparse.Namespace) -> int:
    cfg = _config(args)
    from edgempi import data
    from edgempi.data.names import title
    from edgempi.train import Seeds, load_dataset, make_partition

    try:
        dataset = load_dataset(cfg)
        parts = make_partition(cfg, dataset, Seeds.from_seed(cfg.seed, args.devices))
        table = data.counts(dataset.train_y.numpy(), parts, dataset.num_classes)
    except (ValueError, data.DataError) as exc:
        raise CliError(str(exc)) from exc
    print(f"{cfg.data.name}, partition {cfg.data.partition} {cfg.data.partition_args() or ''}, "
          f"{args.devices} devices, seed {cfg.seed}")
    print(data.format_counts(table))
    if args.plot:
        data.plot_counts(table, args.plot, title(cfg.data.name, cfg.data.partition, cfg.data.partition_args()))
        print(args.plot)
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="edgempi", description="Distributed training methods for edge devices, "
                                "compared on MPI. Run under mpiexec/srun: every rank is one device.")
    p.add_argument("--version", action="version", version=f"edgempi {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def with_config(name: str, help_text: str) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help_text, description=help_text)
        sp.add_argument("config", help="YAML config file")
        sp.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. --set train.lr=0.05 (repeatable)")
        return sp

    run = with_config("run", "train one configuration and write its HDF5 results file")
    run.add_argument("--out", metavar="DIR", help="directory for the results file (output.dir)")
    mode = run.add_mutually_exclusive_group()
    mode.add_argument("--overwrite", action="store_true", help="replace an existing results file")
    mode.add_argument("--resume", action="store_true",
                      help="continue the run of this results file from its last checkpoint")
    run.add_argument("--keep-checkpoints", action="store_true",
                     help="keep the checkpoint folder NAME.ckpt/ after the run completes (removed by default)")
    run.add_argument("--quiet", action="store_true", help="no progress output")
    run.set_defaults(func=cmd_run)
    val = with_config("validate", "check a config without running it")
    val.add_argument("--ranks", type=int, help="also check that the method fits this many ranks")
    val.set_defaults(func=cmd_validate)
    part = with_config("partition", "show how the training set is split across devices (samples per class)")
    part.add_argument("--devices", type=int, required=True,
                      help="number of devices (ranks × parallel.devices_per_rank)")
    part.add_argument("--plot", metavar="FILE.png", help="also draw a devices × classes heat map")
    part.set_defaults(func=cmd_partition)

    from edgempi import sweep
    from edgempi.analysis import cli as analysis_cli

    sw = sub.add_parser("sweep", help="list, count or run the points of a sweep (one per Slurm array task)",
                        description="list, count or run the points of a sweep (one per Slurm array task)")
    sweep.add_arguments(sw)
    sw.set_defaults(func=cmd_sweep)
    for name, help_text in (("plot", "plot metrics of runs against steps, epochs, rounds, bytes or time"),
                            ("report", "table of what each run or group costs to reach a target accuracy"),
                            ("info", "config summary, status and last metrics of a results file")):
        sp = sub.add_parser(name, help=help_text, description=help_text)
        getattr(analysis_cli, f"add_{name}_arguments")(sp)
        sp.set_defaults(func=_analysis(getattr(analysis_cli, f"cmd_{name}")))
    return p


def trains(argv: Sequence[str]) -> bool:
    """Whether the command line starts MPI work: ``run``, or ``sweep`` with ``--task``."""
    command = next((a for a in argv if not a.startswith("-")), None)
    return command == "run" or (command == "sweep" and any(a.split("=")[0] == "--task" for a in argv))


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if trains(argv):
        watchdog.install()
    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except CliError as exc:
        if launcher_rank() == 0:
            print(f"edgempi: {printable(str(exc))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("edgempi: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
