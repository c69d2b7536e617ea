"""Group commit: one thread writes to the database for the event loop.

Coroutines call `await writer.run(fn, *args)`; `fn(db, *args)` runs on the writer
thread. Whatever is queued when the thread wakes is run in one transaction (each call
in its own savepoint, so one failure does not undo the others) and committed once;
then every caller is resumed with its result or exception. Under load many submits
share one commit, and none is answered before its data is on disk.

Hot writes can be batched: `await writer.run_batched(batch, item)` where `batch` has
`run_many(db, items)` (one set-based call for every such item of the commit) and
`run_one(db, item)` (used to isolate the failure when the set-based call fails).

Reads that need no ordering with writes use `await writer.read(fn, *args)` (a thread
pool), so the event loop never blocks on the database.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol, TypeVar

from mephisto.errors import ShutdownError

logger = logging.getLogger(__name__)
T = TypeVar("T")

_STOP = object()


class Batch(Protocol):
    """A kind of write that many callers' items can share one statement for."""

    def run_many(self, db: Any, items: list[Any]) -> list[Any]: ...

    def run_one(self, db: Any, item: Any) -> Any: ...


class _Op:
    __slots__ = ("args", "batch", "fn", "future", "loop")

    def __init__(
        self,
        fn: Callable[..., Any] | None,
        args: tuple[Any, ...],
        future: asyncio.Future[Any],
        loop: asyncio.AbstractEventLoop,
        batch: Any = None,
    ) -> None:
        self.fn = fn
        self.args = args
        self.future = future
        self.loop = loop
        self.batch = batch


def _resolve(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


class DBWriter:
    def __init__(self, db: Any, max_batch: int = 1000, read_threads: int = 4) -> None:
        self.db = db
        self.max_batch = max_batch
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._reads = ThreadPoolExecutor(max_workers=read_threads, thread_name_prefix="mephisto-read")
        self._closed = False

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="mephisto-db-writer", daemon=True)
            self._thread.start()

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run `fn(db, *args)` in the next group commit; return once it is committed."""
        if self._closed:
            raise ShutdownError("the database writer is closed")
        self.start()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._queue.put(_Op(fn, args, future, loop))
        return await future

    async def run_batched(self, batch: Batch, item: Any) -> Any:
        """Queue `item` for `batch`; return its result once committed."""
        if self._closed:
            raise ShutdownError("the database writer is closed")
        self.start()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._queue.put(_Op(None, (item,), future, loop, batch))
        return await future

    async def read(self, fn: Callable[..., T], *args: Any) -> T:
        """Run `fn(db, *args)` on a reader thread."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._reads, lambda: fn(self.db, *args))

    def stop(self) -> None:
        """Finish queued work, then stop the thread."""
        self._closed = True
        if self._thread is not None:
            self._queue.put(_STOP)
            self._thread.join()
            self._thread = None
        self._reads.shutdown(wait=True)

    def _loop(self) -> None:
        while True:
            first = self._queue.get()
            if first is _STOP:
                return
            batch = [first]
            stop_after = False
            while len(batch) < self.max_batch:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is _STOP:
                    stop_after = True
                    break
                batch.append(item)
            self._commit(batch)
            if stop_after:
                return

    def _commit_lone_item(self, kind: Batch, item: Any) -> list[tuple[Any, BaseException | None]]:
        """A batched item alone in its commit: the set-based call (fewer statements),
        in a transaction of its own; if that fails, `run_one` in a new transaction says
        what exactly is wrong (or succeeds)."""
        try:
            with self.db.transaction():
                return [(kind.run_many(self.db, [item])[0], None)]
        except Exception:  # noqa: BLE001 - retried below for the precise outcome
            pass
        try:
            with self.db.transaction():
                return [(kind.run_one(self.db, item), None)]
        except Exception as exc:  # reported to that caller only
            return [(None, exc)]

    def _commit_group(self, batch: list[_Op]) -> list[tuple[Any, BaseException | None]]:
        outcomes: list[tuple[Any, BaseException | None]] = []
        try:
            with self.db.transaction():
                if len(batch) == 1:  # alone in its commit: no savepoint needed
                    op = batch[0]
                    try:
                        outcomes.append((op.fn(self.db, *op.args), None))  # type: ignore[misc]
                    except Exception as exc:
                        outcomes.append((None, exc))
                        raise
                else:
                    i = 0
                    while i < len(batch):
                        j = i + 1
                        if batch[i].batch is not None:
                            while j < len(batch) and batch[j].batch is batch[i].batch:
                                j += 1
                        outcomes.extend(self._run_group(batch[i:j]))
                        i = j
        except Exception as exc:
            if not (len(batch) == 1 and outcomes and outcomes[0][1] is exc):
                logger.exception("group commit of %d operations failed", len(batch))
            outcomes = [(None, exc)] * len(batch)
        return outcomes

    def _one(self, fn: Callable[..., Any], *args: Any) -> tuple[Any, BaseException | None]:
        try:
            with self.db._tx.savepoint():
                return fn(self.db, *args), None
        except Exception as exc:  # reported to that caller only
            return None, exc

    def _run_group(self, ops: list[_Op]) -> list[tuple[Any, BaseException | None]]:
        """Run consecutive ops: a plain op alone, a batch's items in one call."""
        kind = ops[0].batch
        if kind is None:
            return [self._one(op.fn, *op.args) for op in ops]  # type: ignore[arg-type]
        items = [op.args[0] for op in ops]
        try:
            with self.db._tx.savepoint():
                results = kind.run_many(self.db, items)
            return [(r, None) for r in results]
        except Exception:
            pass  # find the culprit item by item
        return [self._one(lambda db, it: kind.run_one(db, it), item) for item in items]

    def _commit(self, batch: list[_Op]) -> None:
        if len(batch) == 1 and batch[0].batch is not None:
            outcomes = self._commit_lone_item(batch[0].batch, batch[0].args[0])
        else:
            outcomes = self._commit_group(batch)
        for op, (result, error) in zip(batch, outcomes, strict=True):
            try:
                op.loop.call_soon_threadsafe(_resolve, op.future, result, error)
            except RuntimeError:  # the loop is closed: nobody waits any more
                pass
