"""The group-commit writer: what a caller is told, and what is on disk when it is told."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import pytest

from mephisto.db import MephistoDB
from mephisto.errors import EntryAlreadyExists, ShutdownError
from mephisto.operations.db_writer import DBWriter


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
