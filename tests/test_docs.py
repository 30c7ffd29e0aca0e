"""docs/config.md is generated from the settings dataclasses: every key and every built-in method,
compressor, data set and model has its text, and the committed page is what the command prints."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from helpers import ROOT

from edgempi import docs
from edgempi.settings import one_of, require


@dataclass
class Demo:
    kind: str = "a"
    """What it is."""
    size: int = 1

    def check(self, cfg: object) -> None:
        one_of(self.kind, ("a", "b"), "x.kind")
        require(self.size > 0, "x.size", f"must be > 0 (0: none), got {self.size}")


def test_a_row_holds_the_docstring_after_the_field_and_what_the_check_allows() -> None:
    rows = list(docs.table(Demo, "x", dataclasses.fields(Demo)))
    assert rows[2] == "| `x.kind` | str | `a` | one of `a`, `b` | What it is. |"
    assert rows[3] == f"| `x.size` | int | `1` | > 0 | {docs.MISSING} |"


def test_every_key_and_entry_has_its_text() -> None:
    missing = docs.undocumented(docs.page())
    assert not missing, ("no text for these (a key's is the string on the line after its field, an entry's its "
                         "docstring):\n" + "\n".join(missing))


def test_docs_config_md_is_what_the_command_prints() -> None:
    page = ROOT / "docs" / "config.md"
    assert page.is_file() and page.read_text(encoding="utf-8") == docs.page(), \
        f"docs/config.md is stale: regenerate it with `{docs.COMMAND}` and commit it"
