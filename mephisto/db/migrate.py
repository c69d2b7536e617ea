"""Bring a database's schema up to date with Alembic, on open.

Cheap when nothing is to do (one query of `alembic_version`), safe when two processes
open the same new database at once (SQLite: an immediate write lock; PostgreSQL: an
advisory lock held for the migration's transaction).
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import sqlalchemy as sa

from mephisto.errors import MigrationError

_SCRIPT_LOCATION = Path(__file__).with_name("migrations")
_PG_LOCK_KEY = 0x4D455048  # "MEPH"


@cache
def _alembic_config():  # type: ignore[no-untyped-def]
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(_SCRIPT_LOCATION))
    return cfg


@cache
def head_revision() -> str:
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(_alembic_config()).get_current_head()
    if head is None:  # pragma: no cover - the package ships migrations
        raise MigrationError(f"no migrations found in {_SCRIPT_LOCATION}")
    return head


def current_revision(conn: sa.Connection) -> str | None:
    if not sa.inspect(conn).has_table("alembic_version"):
        return None
    return conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()


def upgrade(engine: sa.Engine) -> None:
    """Apply every migration the database lacks, in one transaction."""
    with engine.connect() as conn:
        if current_revision(conn) == head_revision():
            return
    from alembic import command

    with engine.connect().execution_options(sqlite_immediate=True) as conn, conn.begin():
        if conn.dialect.name == "postgresql":
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_LOCK_KEY})
        if current_revision(conn) == head_revision():
            return  # another process migrated while we waited for the lock
        cfg = _alembic_config()
        cfg.attributes["connection"] = conn
        try:
            command.upgrade(cfg, "head")
        except Exception as exc:
            raise MigrationError(f"could not migrate the database: {exc}") from exc
        finally:
            cfg.attributes.pop("connection", None)
