"""Rows in and out: what `MephistoDB` and the batch operations share below the API.

Ids are integers in the database and strings outside (Mephisto passes ids as `str`);
agent ids are strings everywhere (unguessable tokens). Errors of the driver become the
package's (`EntryDoesNotExist`, `EntryAlreadyExists`, `DatabaseError`).
"""

from __future__ import annotations

import base64
import operator
import os
import threading
import time
from collections.abc import Iterable, Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from mephisto.db import schema as s
from mephisto.errors import DatabaseError, EntryAlreadyExists, EntryDoesNotExist

ENTITY_NAMES = {
    "projects": "project",
    "tasks": "task",
    "requesters": "requester",
    "task_runs": "task run",
    "assignments": "assignment",
    "units": "unit",
    "workers": "worker",
    "agents": "agent",
    "onboarding_agents": "onboarding agent",
    "qualifications": "qualification",
    "granted_qualifications": "granted qualification",
    "payments": "payment",
    "worker_review": "review",
}

# integer id columns of each table: stored as int, handed out as str
INT_IDS: dict[str, tuple[str, ...]] = {
    name: tuple(
        c.name for c in table.columns
        if (c.name.endswith("_id") or c.name == pk) and isinstance(c.type, sa.Integer)
    )
    for name, (table, pk) in s.TABLES.items()
}


def now() -> float:
    return time.time()


AGENT_ID_BYTES = 18  # 144 random bits, 24 URL-safe characters
_RANDOM_BLOCK = AGENT_ID_BYTES * 256


class _RandomBytes:
    """Bytes of `os.urandom` handed out once each, fetched a block at a time.

    Making an agent id is on the path of every `request_agent`; one `os.urandom` call
    per id is a system call that also gives up the GIL (which the database writer
    thread then takes). A fork's child starts with an empty block, so parent and
    child never hand out the same bytes."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._block = b""
        self._at = 0
        os.register_at_fork(after_in_child=self._forget)

    def _forget(self) -> None:
        self._lock = threading.Lock()
        self._block, self._at = b"", 0

    def take(self, n: int) -> bytes:
        with self._lock:
            at = self._at
            if at + n > len(self._block):
                self._block, at = os.urandom(max(_RANDOM_BLOCK, n)), 0
            self._at = at + n
            return self._block[at:at + n]


_random_bytes = _RandomBytes()


def new_agent_id(prefix: str = "") -> str:
    """An unguessable agent id: knowing it is what lets a browser act for the agent."""
    token = base64.urlsafe_b64encode(_random_bytes.take(AGENT_ID_BYTES)).decode("ascii")
    return prefix + token  # 18 bytes encode to 24 characters with no padding


def key(table: str, entity_id: str | int) -> Any:
    """The stored key of an entity id (`EntryDoesNotExist` for an id that cannot be)."""
    if table in ("agents", "onboarding_agents"):
        return str(entity_id)
    try:
        return int(entity_id)
    except (TypeError, ValueError):
        raise EntryDoesNotExist(
            f"{ENTITY_NAMES[table]} {entity_id!r} does not exist (ids are integers)"
        ) from None


def coerce(table: str, column: str, value: Any) -> Any:
    """A filter value as stored (an id that cannot be one matches nothing)."""
    if column in INT_IDS[table]:
        try:
            return int(value)
        except (TypeError, ValueError):
            return -1
    return value


def out(table: str, row: Any) -> dict[str, Any]:
    """A row as handed out: a dict with string ids."""
    d = dict(row._mapping)
    for col in INT_IDS[table]:
        v = d.get(col)
        if v is not None:
            d[col] = str(v)
    return d


def translate(exc: sa.exc.IntegrityError, table: str, values: Mapping[str, Any]) -> Exception:
    """The package's error for a constraint the database refused."""
    msg = str(exc.orig).lower()
    what = ENTITY_NAMES[table]
    if "foreign key" in msg:
        return EntryDoesNotExist(f"cannot create {what}: it refers to a missing entry ({exc.orig})")
    if "unique" in msg or "duplicate" in msg:
        shown = {k: v for k, v in values.items() if k.endswith(("_name", "_id", "_index"))}
        return EntryAlreadyExists(f"{what} already exists: {shown}")
    return DatabaseError(f"cannot write {what}: {exc.orig}")


def dialect_insert(dialect: str, table: sa.Table) -> Any:
    """An INSERT with ON CONFLICT support for this dialect."""
    return (postgresql.insert if dialect == "postgresql" else sqlite.insert)(table)


def stored_states(
    conn: sa.Connection, table: str, ids: list[str], lock: bool = False
) -> dict[str, Any]:
    """The saved state of these agents (or onboarding agents), by id. With `lock`, their
    rows are held until the transaction ends (PostgreSQL's FOR UPDATE, in id order so two
    lockers cannot deadlock), for a merge that writes the state back: another process
    merging at the same time waits instead of overwriting this one's keys. SQLite's
    writers are one at a time already."""
    t, pk = s.TABLES[table]
    query = sa.select(t.c[pk], t.c.state).where(t.c[pk].in_(ids))
    if lock:
        query = query.order_by(t.c[pk]).with_for_update()
    return {row[0]: row[1] for row in conn.execute(query)}


def id_spans(ids: Iterable[int]) -> list[tuple[int, int]]:
    """Integer ids as the runs of consecutive values they form: [(first, last), ...].
    Units made together have consecutive ids, so a launch of 100,000 is one span."""
    spans: list[tuple[int, int]] = []
    for i in sorted(set(ids)):
        if spans and i == spans[-1][1] + 1:
            spans[-1] = (spans[-1][0], i)
        else:
            spans.append((i, i))
    return spans


def driver_insert_many(conn: sa.Connection, table: sa.Table, rows: list[dict[str, Any]]) -> None:
    """INSERT many rows (all with the keys of the first) through the driver's own
    executemany, skipping SQLAlchemy's per-row parameter machinery, which cost more than
    the insert itself for a 100,000-unit launch. Columns whose type needs a bind
    processor (JSON, booleans) are converted in place: `rows` is consumed."""
    keys = list(rows[0])
    for name in keys:
        process = table.c[name].type.bind_processor(conn.dialect)
        if process is not None:
            for row in rows:
                row[name] = process(row[name])
    quote = conn.dialect.identifier_preparer.quote
    sql = (
        f"INSERT INTO {quote(table.name)} ({', '.join(quote(k) for k in keys)}) "
        f"VALUES ({', '.join('?' for _ in keys)})"
    )
    values = operator.itemgetter(*keys)
    params = [values(row) for row in rows] if len(keys) > 1 else [(values(row),) for row in rows]
    conn.exec_driver_sql(sql, params)


def sql_list(values: Iterable[str]) -> str:
    """Known constant strings (statuses) as a SQL list literal."""
    return ", ".join(f"'{x}'" for x in values)
