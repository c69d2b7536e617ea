"""Engines and transactions for the two supported databases.

- SQLite (embedded default): WAL journal, `synchronous=FULL` (a committed transaction
  survives power loss, not just a crash; group commit keeps the fsyncs few), foreign
  keys on, a 30 s busy timeout. We issue BEGIN ourselves so SAVEPOINT works and so
  writers can take the lock up front (BEGIN IMMEDIATE) instead of failing on upgrade.
- PostgreSQL through psycopg 3. `postgresql://` URLs are read as `postgresql+psycopg://`.

`Transactions` gives one connection per thread while a transaction is open, so calls made
inside `with db.transaction():` join it, and a call made outside gets its own.

`classify_outage` tells the errors that mean "the database cannot be reached or written
right now" (connection lost or refused, server shutting down, disk full, locked past the
busy timeout) from the others, for both drivers; the group-commit writer turns them
into `DatabaseUnavailable`.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import make_url

from mephisto.errors import ConfigError, DatabaseUnavailable

SQLITE_PRAGMAS = (
    "PRAGMA journal_mode=WAL",
    "PRAGMA synchronous=FULL",
    "PRAGMA foreign_keys=ON",
    "PRAGMA busy_timeout=30000",
)


def normalize_url(url: str) -> str:
    try:
        parsed = make_url(url)
    except Exception as exc:
        raise ConfigError(f"not a database URL: {url!r} ({exc})", key="database_url") from exc
    backend = parsed.get_backend_name()
    if backend == "postgresql":
        return parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)
    if backend == "sqlite":
        if parsed.database in (None, "", ":memory:"):
            raise ConfigError(
                "an in-memory SQLite database cannot be shared by the server and the "
                "operator: give a file path (sqlite:///path/to/db)",
                key="database_url",
            )
        return url
    raise ConfigError(
        f"unsupported database {backend!r} in {url!r}: use sqlite:/// or postgresql://",
        key="database_url",
    )


def create_engine(url: str) -> sa.Engine:
    url = normalize_url(url)
    if make_url(url).get_backend_name() == "sqlite":
        return _sqlite_engine(url)
    return sa.create_engine(url, pool_size=10, max_overflow=20, pool_pre_ping=True)


def _sqlite_engine(url: str) -> sa.Engine:
    path = make_url(url).database
    assert path is not None  # checked by normalize_url
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(
        url,
        connect_args={"check_same_thread": False, "timeout": 30},
        pool_size=8,
        max_overflow=16,
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record):  # type: ignore[no-untyped-def]
        dbapi_conn.isolation_level = None  # autocommit at the driver; we send BEGIN
        cursor = dbapi_conn.cursor()
        for pragma in SQLITE_PRAGMAS:
            cursor.execute(pragma)
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn):  # type: ignore[no-untyped-def]
        immediate = conn.get_execution_options().get("sqlite_immediate", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


class Transactions:
    """Per-thread transaction scope over an engine."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        self._local = threading.local()

    @property
    def current(self) -> sa.Connection | None:
        return getattr(self._local, "conn", None)

    @contextmanager
    def begin(self, write: bool = True) -> Iterator[sa.Connection]:
        """Open a transaction, or join the one this thread already has open.

        `write=True` takes SQLite's write lock at BEGIN, so two writers queue on the busy
        timeout instead of one failing when it upgrades a read lock.
        """
        outer = self.current
        if outer is not None:
            yield outer
            return
        with self.engine.connect() as conn:
            if write:
                conn.execution_options(sqlite_immediate=True)
            with conn.begin():
                self._local.conn = conn
                try:
                    yield conn
                finally:
                    self._local.conn = None

    @contextmanager
    def savepoint(self) -> Iterator[sa.Connection]:
        """A transaction whose failure does not spoil an enclosing one."""
        outer = self.current
        if outer is None:
            with self.begin() as conn:
                yield conn
        else:
            with outer.begin_nested():
                yield outer


# -- outages: the database cannot be used right now ------------------------------------


class OutageKind(StrEnum):
    CONNECTION = "connection lost or refused"
    DISK_FULL = "disk full"
    LOCKED = "locked"
    IO_ERROR = "input/output error"
    OTHER = "unavailable"


_FIXES = {
    OutageKind.CONNECTION: "check that the database server is running and reachable",
    OutageKind.DISK_FULL: "free disk space where the database is stored",
    OutageKind.LOCKED: "stop the other process that holds the database's write lock",
    OutageKind.IO_ERROR: "check the disk and the permissions of the database's files",
    OutageKind.OTHER: "check the database",
}


@dataclass(frozen=True, slots=True)
class Outage:
    """Why the database cannot be used right now (`kind`, with the driver's words in
    `detail`), and what an operator does about it (`fix`)."""

    kind: OutageKind
    detail: str

    @property
    def fix(self) -> str:
        return _FIXES[self.kind]

    @property
    def connection_lost(self) -> bool:
        """The connection broke (or could not be made): a new one may well work."""
        return self.kind is OutageKind.CONNECTION


# SQLite primary result codes (the low byte of an extended code)
_SQLITE_KINDS = {
    5: OutageKind.LOCKED,  # SQLITE_BUSY: still locked when the busy timeout ran out
    6: OutageKind.LOCKED,  # SQLITE_LOCKED
    8: OutageKind.IO_ERROR,  # SQLITE_READONLY: e.g. the disk went read-only
    10: OutageKind.IO_ERROR,  # SQLITE_IOERR
    13: OutageKind.DISK_FULL,  # SQLITE_FULL: the disk, or max_page_count
    14: OutageKind.IO_ERROR,  # SQLITE_CANTOPEN
}
# PostgreSQL SQLSTATEs (class 08 is matched by prefix)
_PG_KINDS = {
    "57P01": OutageKind.CONNECTION,  # admin_shutdown: pg_terminate_backend, fast shutdown
    "57P02": OutageKind.CONNECTION,  # crash_shutdown
    "57P03": OutageKind.CONNECTION,  # cannot_connect_now: starting up or shutting down
    "53300": OutageKind.CONNECTION,  # too_many_connections
    "53100": OutageKind.DISK_FULL,  # disk_full
    "58030": OutageKind.IO_ERROR,  # io_error
}


def classify_outage(exc: BaseException) -> Outage | None:
    """The outage `exc` reports, or None when it is an ordinary error (a constraint, a
    bug, bad input), which retrying would not cure. Looks through the exception's causes
    (an error raised while handling an outage is that outage, unless raised `from None`)."""
    seen = 0
    current: BaseException | None = exc
    while current is not None and seen < 6:
        outage = _classify_one(current)
        if outage is not None:
            return outage
        if current.__cause__ is not None or current.__suppress_context__:
            current = current.__cause__  # `raise ... from None` cuts the chain on purpose
        else:
            current = current.__context__
        seen += 1
    return None


def _classify_one(exc: BaseException) -> Outage | None:
    if isinstance(exc, DatabaseUnavailable):
        return Outage(OutageKind.OTHER, str(exc))
    if not isinstance(exc, sa.exc.DBAPIError):
        return None
    orig = exc.orig
    detail = str(orig).strip().splitlines()[0] if str(orig).strip() else type(orig).__name__
    if exc.connection_invalidated:
        return Outage(OutageKind.CONNECTION, detail)
    code = getattr(orig, "sqlite_errorcode", None)
    if code is not None:
        kind = _SQLITE_KINDS.get(code & 0xFF)
        return None if kind is None else Outage(kind, detail)
    if type(orig).__module__.split(".")[0] == "psycopg":
        sqlstate = getattr(orig, "sqlstate", None)
        if sqlstate is None:  # no answer from a server: could not connect, or cut off
            return Outage(OutageKind.CONNECTION, detail) if isinstance(
                exc, sa.exc.OperationalError) else None
        if sqlstate.startswith("08"):  # connection exception
            return Outage(OutageKind.CONNECTION, detail)
        kind = _PG_KINDS.get(sqlstate)
        return None if kind is None else Outage(kind, detail)
    return None


def transaction_lost(conn: sa.Connection | None) -> bool:
    """Whether the transaction open on `conn` is gone although no outage was reported:
    the connection was invalidated, or SQLite rolled the transaction back by itself (it
    may after SQLITE_FULL, SQLITE_IOERR or SQLITE_NOMEM), so later statements would run
    outside it. Cheap; meant for error paths."""
    if conn is None:
        return False
    if conn.invalidated:
        return True
    if conn.dialect.name != "sqlite":
        return False
    dbapi = conn.connection.dbapi_connection
    return dbapi is not None and not dbapi.in_transaction
