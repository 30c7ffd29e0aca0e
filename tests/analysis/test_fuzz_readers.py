"""Fuzzing the readers: random stored configs (any shape YAML can hold, text that is not YAML,
values that are not text) through ``info``, ``report``, ``--group-by`` and the plot legend. A
file may only ever be read or skipped with a one-line ValueError (a RunReadError), and the
other files of its folder are still read: never another exception, never a hang."""
from __future__ import annotations

import tempfile
import typing
from datetime import timedelta
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from runfiles import config as run_config
from runfiles import eval_curve, write_run
from test_fuzz import KEY, VALUES, nested, one_line_value_error

from edgempi.analysis import info, load_runs
from edgempi.analysis.compare import differing_keys, run_label
from edgempi.analysis.report import report

FILES = settings(max_examples=40, deadline=timedelta(seconds=10), suppress_health_check=[HealthCheck.too_slow])
STORED = VALUES | st.dictionaries(KEY, VALUES, max_size=6).map(lambda p: yaml.safe_dump(nested(p))) | st.text(
    max_size=80) | st.integers()


@pytest.fixture(scope="module")
def folder() -> typing.Iterator[Path]:
    with tempfile.TemporaryDirectory() as tmp:
        write_run(Path(tmp) / "good.h5", run_config(), eval_curve([0.5, 0.9]))
        yield Path(tmp)


@FILES
@given(stored=STORED, group=KEY)
def test_readers_take_any_stored_config_or_refuse_it_in_one_line(folder: Path, stored: object, group: str) -> None:
    path = folder / "fuzzed.h5"
    path.unlink(missing_ok=True)
    try:
        write_run(path, run_config(), eval_curve([0.4, 0.8]), config=stored if isinstance(stored, str)
                  else yaml.safe_dump(stored))
    except (TypeError, ValueError, OSError):  # a value HDF5 cannot store as an attribute: nothing to read
        return
    runs = load_runs([folder])
    assert "good" in [r.name for r in runs]
    one_line_value_error(lambda: info(path))
    one_line_value_error(lambda: report(runs, 0.6))
    one_line_value_error(lambda: report(runs, 0.6, group_by=group))
    shown = differing_keys(runs)
    for run in runs:
        run_label(run, shown)
