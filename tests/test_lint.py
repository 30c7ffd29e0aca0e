"""The checks the field runs on its code, run by the suite (so by CI): ``ruff check .`` with the
rules of ruff.toml, and mypy with mypy.ini over the package. A lint or type error fails it."""
from __future__ import annotations

import re
import subprocess
import sys

import pytest
from helpers import ROOT

ERROR = re.compile(r"^[^\s:]+\.py:\d+:")  # path:line: an error line of either tool


def check(*command: str) -> list[str]:
    """The errors ``python -m <command>`` reports from the repository's root, as its lines;
    the command failing without naming an error (a bad config, a crash) fails the test."""
    proc = subprocess.run([sys.executable, "-m", *command], cwd=ROOT, capture_output=True, text=True, timeout=900)
    errors = [line for line in proc.stdout.splitlines() if ERROR.match(line)]
    assert proc.returncode == 0 or errors, f"{' '.join(command)} failed:\n{proc.stdout}{proc.stderr}"
    return errors


@pytest.fixture(scope="module")
def reports() -> dict[str, list[str]]:
    return {"ruff": check("ruff", "check", ".", "--output-format", "concise", "--no-cache"),
            "mypy": check("mypy", "--no-error-summary")}


@pytest.mark.parametrize("tool", ["ruff", "mypy"])
def test_the_code_has_no_lint_or_type_errors(reports: dict[str, list[str]], tool: str) -> None:
    errors = reports[tool]
    assert not errors, f"{tool} reports {len(errors)} error(s):\n" + "\n".join(errors)
