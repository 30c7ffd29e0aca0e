"""Offline analysis of results files: read runs (also while written), tables and plots."""
from edgempi.analysis.info import info
from edgempi.analysis.plot import plot
from edgempi.analysis.report import report
from edgempi.analysis.runs import Run, RunReadError, load_runs, read_run, tidy

__all__ = ["Run", "RunReadError", "info", "load_runs", "plot", "read_run", "report", "tidy"]
