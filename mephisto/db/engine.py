"""Engines and transactions for the two supported databases.

- SQLite (embedded default): WAL journal, `synchronous=FULL` (a committed transaction
  survives power loss, not just a crash; group commit keeps the fsyncs few), foreign
  keys on, a 30 s busy timeout. We issue BEGIN ourselves so SAVEPOINT works and so
  writers can take the lock up front (BEGIN IMMEDIATE) instead of failing on upgrade.
- PostgreSQL through psycopg 3. `postgresql://` URLs are read as `postgresql+psycopg://`.

`Transactions` gives one connection per thread while a transaction is open, so calls made
inside `with db.transaction():` join it, and a call made outside gets its own.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import make_url

from mephisto.errors import ConfigError

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
