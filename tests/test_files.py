"""write_private_file: the owner's only, whole or not at all, exclusive on request."""

from __future__ import annotations

import stat
from pathlib import Path

from mephisto.utils.files import write_private_file


def test_a_private_file_is_the_owners_only_and_replaced_whole(tmp_path: Path) -> None:
    path = tmp_path / "new-folder" / "secret.txt"
    assert write_private_file(path, "one\n")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert write_private_file(path, "two\n") and path.read_text() == "two\n"
    assert [p.name for p in path.parent.iterdir()] == ["secret.txt"]  # no temporary left


def test_exclusive_keeps_an_existing_file(tmp_path: Path) -> None:
    path = tmp_path / "key"
    assert write_private_file(path, "first", exclusive=True)
    assert not write_private_file(path, "second", exclusive=True)
    assert path.read_text() == "first"
    assert [p.name for p in tmp_path.iterdir()] == ["key"]
