"""results/README.md documents the results file field by field: this reads a file a real run
wrote and checks every attribute, table and column against the README's tables, and the
README's sentences that deny a table a column against its tables and the file."""
from __future__ import annotations

import json
import re

import h5py
import pytest
from helpers import ROOT, edgempi, small_config, write_config

from edgempi import algorithms

README = ROOT / "results" / "README.md"
#: a sentence saying a table lacks a column: "`/evals` has no `ctrl_bytes`".
DENIED = re.compile(r"`/(\w+)` (?:(?:has|holds|carries) no|lacks) `(\w+)`")


def readme_rows(first_header: str) -> list[list[str]]:
    """The rows of the README's Markdown table whose first header cell is ``first_header``."""
    rows, inside = [], False
    for line in README.read_text(encoding="utf-8").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")] if line.startswith("|") else None
        if cells and cells[0] == first_header:
            inside = True
        elif cells is None:
            inside = False
        elif inside and not set(cells[0]) <= set("- "):
            rows.append(cells)
    assert rows, f"no table headed {first_header!r} in {README}"
    return rows


def ticked(text: str) -> list[str]:
    return re.findall(r"`([^`]+)`", text)


def documented_attributes() -> dict[str, tuple[str, list[str]]]:
    """attribute → (when it is present, the values the README names for it)."""
    return {ticked(name)[0]: (when, ticked(value)) for name, when, value in readme_rows("attribute")}


def documented_tables() -> dict[str, list[str]]:
    """``/steps``, ``/evals``, and ``/syncs <method>`` → columns."""
    tables = {}
    for name, columns in readme_rows("table"):
        path, *methods = ticked(name)
        for key in [f"{path} {m}" for m in methods] or [path]:
            tables[key] = ticked(columns)
    return tables


@pytest.fixture(scope="module")
def results_file(tmp_path_factory) -> h5py.File:
    """A real run: FedAvg on one rank as two devices, so the devices' models differ."""
    tmp = tmp_path_factory.mktemp("layout")
    cfg = small_config(train={"steps": 6, "eval_every": 3, "log_every": 3},
                       algorithm={"name": "fedavg", "local_steps": 3}, parallel={"devices_per_rank": 2})
    proc = edgempi("run", str(write_config(tmp / "c.yaml", cfg)), "--out", str(tmp), "--quiet")
    assert proc.returncode == 0, proc.stderr
    with h5py.File(proc.stdout.strip(), "r") as f:
        yield f


def test_root_attributes_are_the_documented_ones(results_file: h5py.File) -> None:
    documented = documented_attributes()
    attrs = dict(results_file.attrs)
    assert set(attrs) <= set(documented), set(attrs) - set(documented)
    must = {a for a, (when, _) in documented.items() if when in ("always", "once the run ended")}
    assert must <= set(attrs), must - set(attrs)
    assert attrs["schema"] in documented["schema"][1]
    assert attrs["status"] == "completed" and attrs["status"] in documented["status"][1]
    assert attrs["evaluated_model"] == "global model of the last sync and BatchNorm statistics"
    assert attrs["evaluated_model"] in documented["evaluated_model"][1]
    assert attrs["eval_model"] == "global" and attrs["eval_model"] in documented["eval_model"][1]
    assert set(documented["status"][1]) == {"running", "completed", "failed", "interrupted"}
    assert attrs["devices"] == 2 and attrs["world_size"] == 1
    assert set(json.loads(attrs["versions"])) == set(documented["versions"][1])


def test_tables_and_columns_are_the_documented_ones(results_file: h5py.File) -> None:
    tables = documented_tables()
    assert set(results_file) == {"steps", "evals", "syncs", "partition"}
    assert set(results_file["steps"]) == set(tables["/steps"])
    assert set(results_file["evals"]) == set(tables["/evals"])
    assert set(results_file["syncs"]) == set(tables["/syncs fedavg"])
    assert all(ds.dtype == "f8" and ds.ndim == 1
               for t in ("steps", "evals", "syncs") for ds in results_file[t].values())
    assert list(results_file["partition"]) == ["counts"] and results_file["partition/counts"].shape == (2, 10)
    assert list(results_file["evals/step"][()]) == [0, 3, 6]


def test_every_method_s_syncs_are_documented() -> None:
    tables = documented_tables()
    for name, policy in algorithms.METHODS.entries().items():
        assert tables[f"/syncs {name}"] == ["step", *policy.sync_columns], name


def test_the_prose_denies_no_column_a_table_has(results_file: h5py.File) -> None:
    tables = documented_tables()
    for table, column in DENIED.findall(README.read_text(encoding="utf-8")):
        assert column not in tables[f"/{table}"], f"README says /{table} has no {column}, and its table lists it"
        assert column not in results_file[table], f"README says /{table} has no {column}, and a results file has it"
