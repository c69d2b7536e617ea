"""Writing files that may hold secrets: the owner's only, and never half written."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

__all__ = ["write_private_file"]


def write_private_file(path: Path, text: str, *, exclusive: bool = False) -> bool:
    """Write `text` to `path`, readable by its owner only (mode 600; a folder made for it
    is 700), atomically: a temporary file in the same folder, synced to disk, then
    renamed over `path`, so readers see the old file or the new one, never a part.

    `exclusive`: only create `path` (linked into place), leaving an existing one as it is
    (also one a concurrent writer made first). Returns whether `path` was written."""
    folder = path.parent
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    if exclusive and path.exists():
        return False
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.", suffix=".tmp")  # 600
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        if not exclusive:
            os.replace(tmp, path)
            return True
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        return True
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
