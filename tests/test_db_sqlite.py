"""The database contract on SQLite (a real file, WAL), plus SQLite-specific behaviour."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from mephisto.db import LocalMephistoDB, MephistoDB, migrate
from mephisto.errors import ConfigError
from mephisto.testing.db_contract import MephistoDBContract


class TestSQLite(MephistoDBContract):
    @pytest.fixture
    def db(self, tmp_path: Path) -> Iterator[MephistoDB]:
        database = MephistoDB(f"sqlite:///{tmp_path}/db.sqlite")
        yield database
        database.shutdown()


def test_wal_and_foreign_keys(tmp_path: Path) -> None:
    db = MephistoDB(f"sqlite:///{tmp_path}/db.sqlite")
    with db.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    db.shutdown()


def test_default_location_is_under_data_dir(tmp_path: Path) -> None:
    db = MephistoDB()
    assert (tmp_path / "mephisto_data" / "database.db").exists()
    db.shutdown()


def test_local_db_path_and_reopen_keeps_data(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "my.db"
    db = LocalMephistoDB(str(path))
    db.new_task("kept", "mock")
    db.shutdown()
    again = LocalMephistoDB(str(path))
    assert again.find_tasks()[0].task_name == "kept"
    again.shutdown()


def test_migrations_match_schema(tmp_path: Path) -> None:
    """The migrated database has exactly the tables, columns and indexes of schema.py."""
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    from mephisto.db.schema import metadata

    db = MephistoDB(f"sqlite:///{tmp_path}/db.sqlite")
    with db.engine.connect() as conn:
        assert migrate.current_revision(conn) == migrate.head_revision()
        diff = compare_metadata(MigrationContext.configure(conn), metadata)
    assert diff == []
    db.shutdown()


@pytest.mark.parametrize(
    "url",
    ["sqlite://", "sqlite:///:memory:", "mysql://root@localhost/x", "not a url at all"],
)
def test_bad_urls(url: str) -> None:
    with pytest.raises(ConfigError):
        MephistoDB(url)


def test_opening_two_handles_migrates_once(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/db.sqlite"
    a, b = MephistoDB(url), MephistoDB(url)
    a.new_task("x", "mock")
    assert b.find_tasks()[0].task_name == "x"
    with b.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM alembic_version")).scalar() == 1
    a.shutdown()
    b.shutdown()


def test_agent_ids_are_unique_and_not_shared_with_a_forked_child() -> None:
    import os

    from mephisto.db.rows import new_agent_id
    from mephisto.server.backend import AGENT_ID

    new_agent_id()  # the parent holds a block of random bytes when it forks
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its first ids, to the parent
        os.close(read_end)
        os.write(write_end, " ".join(new_agent_id() for _ in range(50)).encode())
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end) as pipe:
        child_ids = set(pipe.read().split())
    os.waitpid(pid, 0)
    parent_ids = {new_agent_id() for _ in range(20_000)}  # past several blocks
    assert len(child_ids) == 50 and len(parent_ids) == 20_000
    assert not child_ids & parent_ids
    assert all(AGENT_ID.fullmatch(i) and len(i) == 24 for i in parent_ids | child_ids)
