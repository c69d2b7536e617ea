"""The database contract on a real PostgreSQL server (MEPHISTO_TEST_POSTGRES_URL)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from mephisto.db import MephistoDB
from mephisto.testing.db_contract import MephistoDBContract

pytestmark = pytest.mark.postgres


class TestPostgres(MephistoDBContract):
    @pytest.fixture
    def db(self, postgres_url: str) -> Iterator[MephistoDB]:
        database = MephistoDB(postgres_url)
        assert database.dialect == "postgresql"
        yield database
        database.shutdown()


def test_migrations_match_schema(postgres_url: str) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    from mephisto.db.schema import metadata

    db = MephistoDB(postgres_url)
    with db.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), metadata)
    assert diff == []
    db.shutdown()


def test_plain_postgresql_url_uses_psycopg(postgres_url: str) -> None:
    db = MephistoDB(postgres_url.replace("postgresql+psycopg://", "postgresql://"))
    assert db.engine.url.drivername == "postgresql+psycopg"
    db.shutdown()
