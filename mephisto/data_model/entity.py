"""Base of the data model's entities: a row of the database with methods around it.

An entity is built from its id (the row is loaded) or from a row already fetched (no
query). Entities hold no provider logic: providers act on these plain objects.
"""

from __future__ import annotations

from typing import Any, ClassVar


class Entity:
    _getter: ClassVar[str]  # name of the MephistoDB method returning this entity's row
    _status_field: ClassVar[bool] = False  # the row's `status` is exposed as `db_status`

    def __init__(self, db: Any, db_id: str | int, row: dict[str, Any] | None = None) -> None:
        self.db = db
        self.db_id = str(db_id)
        self._load(row if row is not None else getattr(db, self._getter)(self.db_id))

    def _load(self, row: dict[str, Any]) -> None:
        self._row = row
        for key, value in row.items():
            if key == "status" and self._status_field:
                self.db_status = value
            elif isinstance(getattr(type(self), key, None), property):
                continue  # e.g. an agent's `state` column, reached through `.state`
            else:
                setattr(self, key, value)

    def refresh(self) -> None:
        """Reload the row from the database."""
        self._load(getattr(self.db, self._getter)(self.db_id))

    @classmethod
    def get(cls, db: Any, db_id: str | int) -> Any:
        """Load an entity by id (raises `EntryDoesNotExist`)."""
        return cls(db, db_id)

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other.db_id == self.db_id  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash((type(self).__name__, self.db_id))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.db_id!r})"
