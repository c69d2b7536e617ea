"""Shared pytest fixtures.

Every test runs with its own Mephisto home and data directory under a temporary
folder, so no test reads or writes the user's `~/.mephisto`.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest_plugins = ["mephisto.testing.fixtures"]


@pytest.fixture(autouse=True)
def _isolated_mephisto_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEPHISTO_HOME", str(tmp_path / "mephisto_home"))
    monkeypatch.setenv("MEPHISTO_DATA_DIR", str(tmp_path / "mephisto_data"))
    monkeypatch.delenv("MEPHISTO_DATABASE_URL", raising=False)


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A URL to an empty schema of the PostgreSQL server in MEPHISTO_TEST_POSTGRES_URL.

    Without that variable the test is skipped with a visible reason, unless
    MEPHISTO_REQUIRE_POSTGRES=1 (set by CI), which turns the skip into a failure.
    """
    base = os.environ.get("MEPHISTO_TEST_POSTGRES_URL")
    if not base:
        reason = "no PostgreSQL: set MEPHISTO_TEST_POSTGRES_URL to run the PostgreSQL suite"
        if os.environ.get("MEPHISTO_REQUIRE_POSTGRES") == "1":
            pytest.fail(reason + " (MEPHISTO_REQUIRE_POSTGRES=1)")
        pytest.skip(reason)
    import sqlalchemy as sa

    from mephisto.db.engine import normalize_url

    schema = "t_" + uuid.uuid4().hex[:12]
    admin = sa.create_engine(normalize_url(base), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    except sa.exc.OperationalError as exc:
        admin.dispose()
        pytest.fail(f"PostgreSQL at {base} is not reachable: {exc}")
    sep = "&" if "?" in base else "?"
    try:
        yield f"{base}{sep}options=-csearch_path%3D{schema}"
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()
