"""Mephisto's import path for the embedded (SQLite) database; the real home is
`mephisto.db.database`."""

from mephisto.db.database import LocalMephistoDB

__all__ = ["LocalMephistoDB"]
