"""``edgempi plot|report|info``: arguments and handlers, wired into the CLI by edgempi/cli.py.

Handlers return an exit code and raise ValueError (one line, naming the option) for bad
input; the CLI prints it and exits with code 2.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from edgempi.analysis.info import info
from edgempi.analysis.plot import METRICS, X_AXES, plot
from edgempi.analysis.report import report
from edgempi.analysis.runs import Run, RunReadError, find_files, load_runs
from edgempi.settings import printable


def _paths(p: argparse.ArgumentParser) -> None:
    p.add_argument("paths", nargs="+", metavar="PATH", help="results files, or folders searched for *.h5")
    p.add_argument("--group-by", metavar="KEY[,KEY]",
                   help="one line/row per value of these config keys, averaged over the rest (e.g. seeds)")
    p.add_argument("--mixed-eval", action="store_true",
                   help="show runs scored on different models (train.eval_model global and average) together")
    p.add_argument("--all-settings", action="store_true",
                   help="name every config key whose stored value differs between the runs, also a method's "
                        "defaults that the other runs' methods lack (default: only the settings that tell them apart)")


def _runs(paths: list[str]) -> list[Run]:
    runs = load_runs(paths)
    if not runs:
        raise ValueError(f"no readable results files in {' '.join(paths)}")
    return runs


def add_plot_arguments(p: argparse.ArgumentParser) -> None:
    _paths(p)
    p.add_argument("--x", default="step", choices=list(X_AXES),
                   help="x axis (default: step); bytes is the total per device (up + down + control)")
    p.add_argument("--y", default="test_acc", choices=list(METRICS), help="metric (default: test_acc)")
    p.add_argument("--logx", action=argparse.BooleanOptionalAction, default=None,
                   help="log x axis, linear up to the first decade so the step-0 point stays drawn "
                        "(default: log for the byte axes, linear for the others)")
    p.add_argument("--title", help="figure title (default: the data set and split the runs share; '' for none)")
    p.add_argument("--out", "-o", required=True, metavar="FILE", help="figure file: .png, .pdf or .svg")


def cmd_plot(args: argparse.Namespace) -> int:
    print(plot(_runs(args.paths), args.x, args.y, group_by=args.group_by, logx=args.logx, out=args.out,
               title=args.title, mixed_eval=args.mixed_eval, all_settings=args.all_settings))
    return 0


def add_report_arguments(p: argparse.ArgumentParser) -> None:
    _paths(p)
    p.add_argument("--target-acc", "--target", dest="target", type=float, required=True, metavar="ACC",
                   help="target test accuracy, a fraction or a percentage (0.8 or 80)")
    p.add_argument("--baseline", metavar="KEY=VALUE",
                   help="runs to compare bytes with, e.g. algorithm.name=large_batch")
    p.add_argument("--strict", action="store_true",
                   help="reached at the first evaluation above the target, not at or above (the FDA paper's rule)")
    p.add_argument("--format", dest="fmt", default="md", choices=("md", "csv"), help="table format (default: md)")
    p.add_argument("--out", "-o", metavar="FILE", help="write the table here instead of stdout")


def cmd_report(args: argparse.Namespace) -> int:
    text = report(_runs(args.paths), args.target, baseline=args.baseline, fmt=args.fmt, group_by=args.group_by,
                  strict=args.strict, mixed_eval=args.mixed_eval, all_settings=args.all_settings)
    if args.out:
        Path(args.out).write_text(text, encoding="utf-8")
        print(args.out)
    else:
        print(text, end="")
    return 0


def add_info_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("files", nargs="+", metavar="PATH", help="results files, or folders searched for *.h5")


def cmd_info(args: argparse.Namespace) -> int:
    """Every readable file's summary; an unreadable one is a warning line among several files,
    the error (exit 2) when it is the only file or none could be read."""
    files = find_files(args.files)
    if not files:
        raise ValueError(f"no results files (*.h5) in {' '.join(args.files)}")
    texts, failures = [], []
    for f in files:
        try:
            texts.append(info(f))
        except RunReadError as exc:
            failures.append(exc)
    if failures and not texts:
        raise failures[0]
    for failure in failures:
        print(printable(f"edgempi: skipping {failure}"), file=sys.stderr)
    print("\n".join(texts), end="")
    return 0
