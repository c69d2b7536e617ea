"""Mephisto's import path for the database class and its errors; the real homes are
`mephisto.db.database` (`MephistoDB`) and `mephisto.errors` (the errors, under the
Mephisto names it keeps: `MephistoDBException` is our `DatabaseError`)."""

from mephisto.db.database import MephistoDB
from mephisto.errors import (
    EntryAlreadyExistsException,
    EntryDoesNotExistException,
    MephistoDBException,
)

__all__ = [
    "EntryAlreadyExistsException",
    "EntryDoesNotExistException",
    "MephistoDB",
    "MephistoDBException",
]
