"""The group-commit writer: what a caller is told, and what is on disk when it is told."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from mephisto.db import MephistoDB
from mephisto.db.engine import OutageKind, classify_outage
from mephisto.db.writer import DBWriter
from mephisto.errors import DatabaseUnavailable, EntryAlreadyExists, ShutdownError
from mephisto.testing.faults import SQLiteSizeCap, terminate_backends, with_application_name


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'writer.db'}"


@pytest.fixture
def writer(db_url: str) -> Any:
    db = MephistoDB(db_url)
    w = DBWriter(db)
    yield w
    w.stop()
    db.shutdown()


def _project_names(db_url: str) -> set[str]:
    other = MephistoDB(db_url)  # its own connection: sees only what was committed
    try:
        return {p.project_name for p in other.find_projects()}
    finally:
        other.shutdown()


class _Names:
    """A batch that creates projects; records how it was called."""

    def __init__(self) -> None:
        self.many_calls: list[list[str]] = []
        self.one_calls: list[str] = []

    def run_many(self, db: Any, items: list[str]) -> list[str]:
        self.many_calls.append(list(items))
        return [db.new_project(name) for name in items]

    def run_one(self, db: Any, item: str) -> str:
        self.one_calls.append(item)
        return db.new_project(item)


async def _grouped(writer: DBWriter, calls: list[Any]) -> list[Any]:
    """Queue `calls` while the writer is held inside a commit, so they share the next one."""
    entered, release = threading.Event(), threading.Event()

    def hold(db: Any) -> None:
        entered.set()
        release.wait(10)

    holder = asyncio.ensure_future(writer.run(hold))
    await asyncio.to_thread(entered.wait, 10)
    tasks = [asyncio.ensure_future(call()) for call in calls]
    await asyncio.sleep(0.05)  # every call is queued
    release.set()
    await holder
    return await asyncio.gather(*tasks, return_exceptions=True)


async def test_answered_only_once_committed(writer: DBWriter, db_url: str) -> None:
    project_id = await writer.run(lambda db: db.new_project("committed"))
    assert project_id
    assert _project_names(db_url) == {"committed"}


async def test_a_failing_call_undoes_only_itself(writer: DBWriter, db_url: str) -> None:
    await writer.run(lambda db: db.new_project("taken"))
    results = await _grouped(writer, [
        lambda: writer.run(lambda db: db.new_project("first")),
        lambda: writer.run(lambda db: db.new_project("taken")),  # unique name: fails
        lambda: writer.run(lambda db: db.new_project("third")),
    ])
    assert isinstance(results[1], EntryAlreadyExists)
    assert all(isinstance(r, str) for r in (results[0], results[2]))
    assert _project_names(db_url) == {"taken", "first", "third"}


async def test_a_lone_failing_call_raises_and_leaves_nothing(writer: DBWriter, db_url: str) -> None:
    def two_then_fail(db: Any) -> None:
        db.new_project("half-done")
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        await writer.run(two_then_fail)
    assert _project_names(db_url) == set()


async def test_batched_items_share_one_call(writer: DBWriter, db_url: str) -> None:
    batch = _Names()
    names = [f"p{i}" for i in range(5)]
    results = await _grouped(writer, [lambda n=n: writer.run_batched(batch, n) for n in names])
    assert all(isinstance(r, str) for r in results)
    assert batch.many_calls == [names] and batch.one_calls == []
    assert _project_names(db_url) == set(names)


async def test_a_failing_batch_is_retried_item_by_item(writer: DBWriter, db_url: str) -> None:
    await writer.run(lambda db: db.new_project("dup"))
    batch = _Names()
    names = ["a", "dup", "b"]
    results = await _grouped(writer, [lambda n=n: writer.run_batched(batch, n) for n in names])
    assert isinstance(results[1], EntryAlreadyExists)
    assert isinstance(results[0], str) and isinstance(results[2], str)
    assert batch.one_calls == names  # the set-based call failed: each item alone
    assert _project_names(db_url) == {"dup", "a", "b"}


async def test_a_lone_batched_item_takes_the_set_based_call(writer: DBWriter, db_url: str) -> None:
    batch = _Names()
    assert await writer.run_batched(batch, "solo")
    assert batch.many_calls == [["solo"]] and batch.one_calls == []
    # when that fails, run_one (in a fresh transaction) gives the precise outcome
    with pytest.raises(EntryAlreadyExists):
        await writer.run_batched(batch, "solo")
    assert batch.many_calls == [["solo"], ["solo"]] and batch.one_calls == ["solo"]
    await writer.run(lambda db: db.new_project("other"))
    assert _project_names(db_url) == {"solo", "other"}


async def test_closed_writer_refuses_work(writer: DBWriter) -> None:
    await writer.run(lambda db: db.new_project("before"))
    await asyncio.to_thread(writer.stop)
    with pytest.raises(ShutdownError):
        await writer.run(lambda db: db.new_project("after"))
    with pytest.raises(ShutdownError):
        await writer.run_batched(_Names(), "after")


# -- the database failing under the writer ----------------------------------------------

WRITER_LOG = "mephisto.db.writer"


def _lost_connection() -> sa.exc.OperationalError:
    """What SQLAlchemy raises when a statement finds its connection gone."""
    return sa.exc.OperationalError(
        "SELECT 1", {}, sqlite3.OperationalError("server closed the connection"),
        connection_invalidated=True,
    )


class _Flaky:
    """An op that creates a project, failing with `error()` the first `fails` times."""

    def __init__(self, name: str, fails: int, error: Any = _lost_connection) -> None:
        self.name, self.fails, self.error, self.calls = name, fails, error, 0

    def __call__(self, db: Any) -> str:
        self.calls += 1
        db.new_project(self.name)
        if self.calls <= self.fails:
            raise self.error()
        return self.name


def _records(caplog: pytest.LogCaptureFixture, level: int) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == WRITER_LOG and r.levelno == level]


def test_outages_are_told_from_other_errors(tmp_path: Path) -> None:
    assert classify_outage(EntryAlreadyExists("taken")) is None
    assert classify_outage(ValueError("bug")) is None
    lost = classify_outage(_lost_connection())
    assert lost is not None and lost.kind is OutageKind.CONNECTION and lost.connection_lost
    # real SQLite errors: a constraint is not an outage; a full disk and a lock are
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'c.db'}", connect_args={"timeout": 0})
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE t (x TEXT UNIQUE)")
        conn.exec_driver_sql("INSERT INTO t VALUES ('a')")
    with pytest.raises(sa.exc.IntegrityError) as dup, engine.begin() as conn:
        conn.exec_driver_sql("INSERT INTO t VALUES ('a')")
    assert classify_outage(dup.value) is None
    with (
        SQLiteSizeCap(engine),
        pytest.raises(sa.exc.OperationalError) as full,
        engine.begin() as conn,
    ):
        conn.exec_driver_sql("INSERT INTO t SELECT hex(randomblob(2000)) FROM t")
    outage = classify_outage(full.value)
    assert outage is not None and outage.kind is OutageKind.DISK_FULL
    assert "free disk space" in outage.fix and not outage.connection_lost
    holder = sqlite3.connect(tmp_path / "c.db", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    with pytest.raises(sa.exc.OperationalError) as locked, engine.begin() as conn:
        conn.exec_driver_sql("INSERT INTO t VALUES ('b')")
    holder.close()
    engine.dispose()
    outage = classify_outage(locked.value)
    assert outage is not None and outage.kind is OutageKind.LOCKED
    # an error raised while handling an outage is that outage
    try:
        try:
            raise _lost_connection()
        except sa.exc.OperationalError:
            raise RuntimeError("cleanup failed") from None
    except RuntimeError as chained:
        assert classify_outage(chained) is None  # `from None`: the cause was cut on purpose
    try:
        try:
            raise _lost_connection()
        except sa.exc.OperationalError:
            raise RuntimeError("cleanup failed")  # the implicit context counts
    except RuntimeError as chained:
        assert classify_outage(chained) is not None


async def test_a_connection_lost_before_commit_is_retried_once(
    writer: DBWriter, db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    flaky = _Flaky("flaky", fails=1)
    results = await _grouped(writer, [
        lambda: writer.run(lambda db: db.new_project("first")),
        lambda: writer.run(flaky),
        lambda: writer.run(lambda db: db.new_project("third")),
    ])
    assert results[1] == "flaky" and all(isinstance(r, str) for r in results)
    assert flaky.calls == 2  # the whole commit ran again, on a new connection
    assert _project_names(db_url) == {"first", "flaky", "third"}  # each once
    assert len(_records(caplog, logging.WARNING)) == 1
    assert not _records(caplog, logging.ERROR)


async def test_a_lone_call_losing_its_connection_is_retried(writer: DBWriter, db_url: str) -> None:
    flaky = _Flaky("alone", fails=1)
    assert await writer.run(flaky) == "alone"
    assert flaky.calls == 2 and _project_names(db_url) == {"alone"}


async def test_a_connection_lost_twice_refuses_every_caller(
    writer: DBWriter, db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    flaky = _Flaky("never", fails=99)
    results = await _grouped(writer, [
        lambda: writer.run(lambda db: db.new_project("bystander")),
        lambda: writer.run(flaky),
    ])
    assert all(isinstance(r, DatabaseUnavailable) for r in results), results
    assert flaky.calls == 2  # retried once, not more
    assert _project_names(db_url) == set()  # nobody's write kept: nobody was told it was
    errors = _records(caplog, logging.ERROR)
    assert len(errors) == 1 and "connection" in errors[0].getMessage()


async def test_a_failure_at_commit_is_not_retried(writer: DBWriter, db_url: str) -> None:
    def break_at_commit(conn: sa.Connection) -> None:  # COMMIT is on its way: outcome unknown
        raise _lost_connection()

    sa.event.listen(writer.db.engine, "commit", break_at_commit)
    counted = _Flaky("maybe", fails=0)
    try:
        with pytest.raises(DatabaseUnavailable, match="unknown"):
            await writer.run(counted)
    finally:
        sa.event.remove(writer.db.engine, "commit", break_at_commit)
    assert counted.calls == 1
    assert await writer.run(lambda db: db.new_project("after")) is not None
    assert _project_names(db_url) == {"after"}


async def test_a_full_disk_refuses_the_commit_logs_once_and_recovers(
    writer: DBWriter, db_url: str, caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(writer._outages, "quiet", 0.3)  # over once 0.3 s without failure
    batch = _Names()
    await writer.run(lambda db: db.new_project("before"))
    with SQLiteSizeCap(writer.db.engine) as cap:
        for round_ in range(3):
            names = [f"r{round_}-{i}-" + "x" * 2000 for i in range(5)]
            results = await _grouped(writer, [
                *(lambda n=n: writer.run_batched(batch, n) for n in names),
                lambda: writer.run(lambda db: db.new_project("small")),
            ])
            assert all(isinstance(r, DatabaseUnavailable) for r in results), results
            assert "disk full" in str(results[0])
        assert batch.one_calls == []  # an outage is not hunted item by item
        errors = _records(caplog, logging.ERROR)
        assert len(errors) == 1, [r.getMessage() for r in errors]  # one per outage
        assert "free disk space" in errors[0].getMessage()
        assert _project_names(db_url) == {"before"}
        cap.lift()
        assert await writer.run_batched(batch, "after")
        assert not _records(caplog, logging.WARNING)  # too soon to call it over
        await asyncio.sleep(0.3)
        await writer.run(lambda db: None)
    recovered = _records(caplog, logging.WARNING)
    assert len(recovered) == 1 and "available again" in recovered[0].getMessage()
    assert _project_names(db_url) == {"before", "after"}
    assert len(_records(caplog, logging.ERROR)) == 1


async def test_a_lone_batched_item_in_an_outage_is_refused_without_run_one(writer: DBWriter) -> None:
    batch = _Names()
    with SQLiteSizeCap(writer.db.engine), pytest.raises(DatabaseUnavailable):
        await writer.run_batched(batch, "y" * 5000)
    assert len(batch.many_calls) == 1 and batch.one_calls == []


async def test_a_transaction_the_database_rolled_back_fails_the_whole_group(
    writer: DBWriter, db_url: str
) -> None:
    """SQLite may roll a transaction back by itself (after SQLITE_FULL, IOERR, NOMEM);
    the calls after that must not run outside it, nor anyone be told they were kept."""

    def rolled_back(db: Any) -> None:
        db._tx.current.exec_driver_sql("ROLLBACK")
        raise ValueError("statement failed and the database rolled back")

    results = await _grouped(writer, [
        lambda: writer.run(lambda db: db.new_project("first")),
        lambda: writer.run(rolled_back),
        lambda: writer.run(lambda db: db.new_project("third")),
    ])
    assert all(isinstance(r, Exception) for r in results), results
    assert _project_names(db_url) == set()


async def test_reads_retry_a_lost_connection_and_translate_outages(writer: DBWriter) -> None:
    calls = 0

    def flaky_read(db: Any) -> int:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise _lost_connection()
        return len(db.find_projects())

    assert await writer.read(flaky_read) == 0 and calls == 2

    def down(db: Any) -> None:
        raise _lost_connection()

    with pytest.raises(DatabaseUnavailable):
        await writer.read(down)

    def bug(db: Any) -> None:
        raise KeyError("not an outage")

    with pytest.raises(KeyError):
        await writer.read(bug)


# -- the same on a real PostgreSQL server -------------------------------------------------


@pytest.fixture
def pg_writer(postgres_url: str) -> Any:
    db = MephistoDB(with_application_name(postgres_url, "writer-test"))
    w = DBWriter(db)
    yield w
    w.stop()
    db.shutdown()


@pytest.mark.postgres
async def test_postgres_backend_killed_mid_commit_is_retried(pg_writer: DBWriter) -> None:
    calls = 0

    def killed_once(db: Any) -> str:
        nonlocal calls
        calls += 1
        db.new_project("survivor")
        if calls == 1:  # the server ends this connection in the middle of the transaction
            db._tx.current.exec_driver_sql("SELECT pg_terminate_backend(pg_backend_pid())")
        return "survivor"

    results = await _grouped(pg_writer, [
        lambda: pg_writer.run(lambda db: db.new_project("neighbour")),
        lambda: pg_writer.run(killed_once),
    ])
    assert results == [results[0], "survivor"] and calls == 2
    names = {p.project_name for p in pg_writer.db.find_projects()}
    assert names == {"neighbour", "survivor"}


@pytest.mark.postgres
async def test_postgres_killed_at_commit_is_refused_not_retried(
    pg_writer: DBWriter, postgres_url: str
) -> None:
    calls = 0

    def killed_before_commit(db: Any) -> None:
        nonlocal calls
        calls += 1
        db.new_project("in-doubt")
        # killed from outside while idle in transaction: the error comes at COMMIT
        assert terminate_backends(postgres_url, "writer-test") >= 1

    with pytest.raises(DatabaseUnavailable, match="unknown"):
        await pg_writer.run(killed_before_commit)
    assert calls == 1
    assert await pg_writer.run(lambda db: db.new_project("later")) is not None
    assert {p.project_name for p in pg_writer.db.find_projects()} == {"later"}


@pytest.mark.postgres
async def test_postgres_idle_connections_killed_are_replaced(
    pg_writer: DBWriter, postgres_url: str
) -> None:
    await pg_writer.run(lambda db: db.new_project("one"))
    assert len(await pg_writer.read(lambda db: db.find_projects())) == 1
    assert terminate_backends(postgres_url, "writer-test") >= 1
    await pg_writer.run(lambda db: db.new_project("two"))
    assert len(await pg_writer.read(lambda db: db.find_projects())) == 2
