"""What the CLI tests share: wide console output (`wide`, an autouse fixture to import
into a test module), the CLI run against a database, and reading its tables back."""

from __future__ import annotations

import re

import pytest
from click.testing import CliRunner, Result

import mephisto.cli as cli_module
from mephisto.cli import cli
from mephisto.db import MephistoDB


@pytest.fixture(autouse=True)
def wide(monkeypatch: pytest.MonkeyPatch) -> None:
    """Rich wraps at 80 columns under CliRunner; wide tables keep a row on one line."""
    monkeypatch.setattr(cli_module.console, "_width", 240)
    monkeypatch.setattr(cli_module.err_console, "_width", 240)


def run(db: MephistoDB, *args: str, stdin: str | None = None) -> Result:
    """`mephisto <args> --database <db's URL>`."""
    url = db.engine.url.render_as_string(hide_password=False)
    return CliRunner().invoke(cli, [*args, "--database", url], input=stdin)


def flat(result: Result) -> str:
    return re.sub(r"\s+", " ", result.output)


def rows(output: str) -> dict[str, list[str]]:
    """Table rows by their first cell (rows of every table in the output)."""
    out = {}
    for line in output.splitlines():
        if line.startswith("│"):
            cells = [c.strip() for c in line.strip("│").split("│")]
            out[cells[0]] = cells[1:]
    return out
