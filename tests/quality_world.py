"""Helpers of tests/test_cli_qualifications.py and tests/test_cli_workers.py: their
databases (`any_db` on SQLite and PostgreSQL, `db` on SQLite; fixtures to import), a
small world of requesters, tasks, runs, workers and their units built through
MephistoDB, and a snapshot of every table a command may change."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from mephisto.db import MephistoDB, batch
from mephisto.db import schema as s

REVIEW = {"accepted": "approved", "rejected": "rejected", "soft_rejected": "soft_rejected"}


@pytest.fixture(params=["sqlite", "postgres"])
def any_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[MephistoDB]:
    url = (f"sqlite:///{tmp_path / 'cli.db'}" if request.param == "sqlite"
           else str(request.getfixturevalue("postgres_url")))
    database = MephistoDB(url)
    yield database
    database.shutdown()


@pytest.fixture
def db(tmp_path: Path) -> Iterator[MephistoDB]:
    database = MephistoDB(f"sqlite:///{tmp_path / 'cli.db'}")
    yield database
    database.shutdown()


class World:
    def __init__(self, db: MephistoDB) -> None:
        self.db = db
        self.runs: dict[str, dict[str, str]] = {}

    def requester(self, name: str, provider: str) -> str:
        found = self.db.find_requesters(requester_name=name)
        return found[0].db_id if found else self.db.new_requester(name, provider)

    def task_run(self, task: str, provider: str = "mock", requester: str | None = None) -> str:
        req_id = self.requester(requester or f"req-{provider}", provider)
        task_id = self.db.new_task(task, "static_task")
        config = (f"provider:\n  _provider_type: {provider}\n"
                  f"  requester_name: {requester or f'req-{provider}'}\n")
        run_id = self.db.new_task_run(task_id, req_id, config, provider, "static_task")
        self.runs[task] = {"task_id": task_id, "run_id": run_id, "provider": provider}
        return run_id

    def worker(self, name: str, provider: str = "mock") -> str:
        return self.db.find_or_new_worker(name, provider).db_id

    def unit(self, task: str, worker: str, status: str, pay: float = 1.0) -> str:
        db, r = self.db, self.runs[task]
        [(assignment_id, [unit_id])] = batch.new_assignments_with_units(
            db, r["run_id"], [{}], pay, 1, status="launched")
        agent = db.new_agent(self.worker(worker, r["provider"]), unit_id, r["task_id"],
                             r["run_id"], assignment_id, "static_task", r["provider"],
                             status="in task")
        if status != "assigned":
            db.update_agent(agent, status="completed")
        if status in REVIEW:
            db.update_agent(agent, status=REVIEW[status])
        assert db.get_unit(unit_id)["status"] == status
        return unit_id


def snapshot(db: MephistoDB) -> dict[str, list[Any]]:
    """Every row of the tables a qualification or worker command may change."""
    tables = (s.qualifications, s.granted_qualifications, s.worker_blocks, s.worker_review,
              s.provider_records, s.workers, s.requesters)
    with db.read() as conn:
        return {t.name: sorted(map(tuple, conn.execute(sa.select(t)).all()), key=repr)
                for t in tables}


@contextmanager
def selects(db: MephistoDB) -> Iterator[list[str]]:
    """The SELECT statements run inside the block."""
    seen: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            seen.append(statement)

    sa.event.listen(db.engine, "before_cursor_execute", count)
    try:
        yield seen
    finally:
        sa.event.remove(db.engine, "before_cursor_execute", count)


def mock_records(db: MephistoDB, kind: str) -> dict[str, Any]:
    return db.find_provider_records("mock", kind)
