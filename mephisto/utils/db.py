"""Mephisto's import path (since 1.4) for the database errors; the real home is
`mephisto.errors` (`MephistoDBException` is our `DatabaseError`)."""

from mephisto.errors import (
    EntryAlreadyExistsException,
    EntryDoesNotExistException,
    MephistoDBException,
)

__all__ = ["EntryAlreadyExistsException", "EntryDoesNotExistException", "MephistoDBException"]
