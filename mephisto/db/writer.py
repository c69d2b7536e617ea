"""Group commit: one thread writes to the database for the event loop.

Coroutines call `await writer.run(fn, *args)`; `fn(db, *args)` runs on the writer
thread. What a loop queues in one turn is handed over at the end of the turn, together;
whatever is queued when the thread wakes is run in one transaction (each call
in its own savepoint, so one failure does not undo the others) and committed once;
then every caller is resumed with its result or exception. Under load many submits
share one commit, and none is answered before its data is on disk.

Hot writes can be batched: `await writer.run_batched(batch, item)` where `batch` has
`run_many(db, items)` (one set-based call for every such item of the commit) and
`run_one(db, item)` (used to isolate the failure when the set-based call fails).

Reads that need no ordering with writes use `await writer.read(fn, *args)` (a thread
pool), so the event loop never blocks on the database.

When the database itself fails (it cannot be reached or written right now: connection
lost or refused, server restarting, disk full, locked past the busy timeout; see
`mephisto.db.engine.classify_outage`), the whole commit is abandoned and every caller in
it gets `DatabaseUnavailable` (the task server answers 503): the transaction is gone,
so no caller's write is kept. Other errors stay the caller's own, as above.
- A connection lost before COMMIT was sent means the server rolled the transaction back:
  the commit is run once more, on a new connection, and its callers see nothing.
- A failure at COMMIT is ambiguous (PostgreSQL may have committed before the connection
  dropped): it is not retried, and its callers get `DatabaseUnavailable` saying the
  outcome is unknown.
- An outage is logged once: an ERROR naming the cause and the fix at its first failure,
  and a WARNING at the first successful commit 10 s after its last failure.
Reads retry a lost connection once and raise `DatabaseUnavailable` for outages too.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from mephisto.db.engine import Outage, classify_outage, transaction_lost
from mephisto.errors import DatabaseUnavailable, ShutdownError

if TYPE_CHECKING:
    from mephisto.db.database import MephistoDB

logger = logging.getLogger(__name__)
T = TypeVar("T")

_STOP = object()


class Batch(Protocol):
    """A kind of write that many callers' items can share one statement for."""

    def run_many(self, db: MephistoDB, items: list[Any]) -> list[Any]: ...

    def run_one(self, db: MephistoDB, item: Any) -> Any: ...


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


Outcome = tuple[Any, BaseException | None]


class _Down(Exception):
    """The database failed under a commit: abandon all of it. `at_commit`: the failure
    came from COMMIT itself, so the transaction may have been committed."""

    def __init__(self, error: BaseException, outage: Outage, at_commit: bool) -> None:
        super().__init__(str(error))
        self.error = error
        self.outage = outage
        self.at_commit = at_commit


class _OutageLog:
    """One log record per outage, not one per request: an ERROR at its first failure
    (again only if the cause changes), one WARNING when it is over.

    An outage is over at the first successful commit `quiet` seconds after its last
    failure: while a disk is full, commits that need no new space still succeed, and
    a lone success in between must not start a new outage (and a new ERROR)."""

    quiet = 10.0

    def __init__(self, url: str) -> None:
        self.url = url
        self.since: float | None = None  # read unlocked on the hot path
        self._last_failure = 0.0
        self._lock = threading.Lock()
        self._kinds: set[str] = set()
        self._refused = 0

    def failed(self, outage: Outage, calls: int, outcome_unknown: bool = False) -> str:
        """Record `calls` calls refused; return the message they are refused with."""
        with self._lock:
            self._last_failure = time.monotonic()
            if self.since is None:
                self.since = self._last_failure
            self._refused += calls
            first = outage.kind not in self._kinds
            self._kinds.add(outage.kind)
        if first:
            logger.error(
                "the database (%s) cannot be used: %s (%s). Fix: %s. Until then workers "
                "are answered 503 and asked to retry; the run carries on by itself once "
                "writes succeed again.",
                self.url, outage.kind, outage.detail, outage.fix,
            )
        message = f"{outage.kind} ({outage.detail}); {outage.fix}"
        if outcome_unknown:
            message += "; the connection broke during COMMIT, so whether it was saved is unknown"
        return message

    def succeeded(self) -> None:
        """A commit succeeded during an outage: maybe it is over."""
        with self._lock:
            now = time.monotonic()
            if self.since is None or now - self._last_failure < self.quiet:
                return
            seconds, refused = self._last_failure - self.since, self._refused
            self.since, self._refused = None, 0
            self._kinds.clear()
        logger.warning(
            "the database (%s) is available again: its outage lasted %.1f s and %d calls "
            "were refused (503)", self.url, seconds, refused,
        )


def _resolve(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


class DBWriter:
    def __init__(self, db: MephistoDB, max_batch: int = 1000, read_threads: int = 4) -> None:
        self.db = db
        self.max_batch = max_batch
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()  # lists of ops, _STOP
        self._pending: dict[asyncio.AbstractEventLoop, list[_Op]] = {}  # this turn's, by loop
        self._thread: threading.Thread | None = None
        self._reads = ThreadPoolExecutor(max_workers=read_threads, thread_name_prefix="mephisto-read")
        self._closed = False
        self._outages = _OutageLog(getattr(db, "url", "?"))

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
        self._enqueue(_Op(fn, args, future, loop))
        return await future

    async def run_batched(self, batch: Batch, item: Any) -> Any:
        """Queue `item` for `batch`; return its result once committed."""
        if self._closed:
            raise ShutdownError("the database writer is closed")
        self.start()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._enqueue(_Op(None, (item,), future, loop, batch))
        return await future

    def _enqueue(self, op: _Op) -> None:
        """Hand `op` to the writer thread at the end of this turn of its loop, with the
        other ops queued in the turn: they reach the writer together (one wake-up, one
        commit), whatever the loop does between them (anything that lets the writer
        thread run, such as `os.urandom`, would otherwise split them)."""
        pending = self._pending.get(op.loop)
        if pending is None:
            pending = self._pending[op.loop] = []
            op.loop.call_soon(self._flush, op.loop)
        pending.append(op)

    def _flush(self, loop: asyncio.AbstractEventLoop) -> None:
        ops = self._pending.pop(loop)
        if self._closed and self._thread is None:  # stopped meanwhile: nobody would run them
            for op in ops:
                _resolve(op.future, None, ShutdownError("the database writer is closed"))
            return
        self._queue.put(ops)

    async def read(self, fn: Callable[..., T], *args: Any) -> T:
        """Run `fn(db, *args)` on a reader thread. A lost connection is retried once (a
        read changes nothing); an outage raises `DatabaseUnavailable`."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._reads, self._read, fn, args)

    def _read(self, fn: Callable[..., T], args: tuple[Any, ...]) -> T:
        try:
            return fn(self.db, *args)
        except Exception as exc:
            outage = classify_outage(exc)
            if outage is None:
                raise
            error: BaseException = exc
        if outage.connection_lost:
            try:
                return fn(self.db, *args)
            except Exception as again:
                retried = classify_outage(again)
                if retried is None:
                    raise
                outage, error = retried, again
        raise DatabaseUnavailable(self._outages.failed(outage, 1)) from error

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
            batch = list(first)
            stop_after = False
            while len(batch) < self.max_batch:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is _STOP:
                    stop_after = True
                    break
                batch.extend(item)
            self._commit(batch)
            if stop_after:
                return

    def _in_transaction(self, body: Callable[[], T]) -> T:
        """`body()` in one transaction. A database outage raises `_Down`, telling whether
        it struck at COMMIT; any other error propagates as it is."""
        committing = False
        try:
            with self.db.transaction():
                result = body()
                committing = True
            return result
        except _Down:
            raise
        except Exception as exc:
            outage = classify_outage(exc)
            if outage is None:
                raise
            raise _Down(exc, outage, committing) from exc

    def _check_transaction(self, exc: Exception) -> None:
        """After a call failed inside the shared transaction: raise if that transaction
        is gone (an outage, or a rollback the database did by itself), so no later call
        runs outside it and nobody is told their write was kept."""
        if classify_outage(exc) is not None or transaction_lost(self.db.current_connection):
            raise exc

    def _commit_lone_item(self, kind: Batch, item: Any) -> list[Outcome]:
        """A batched item alone in its commit: the set-based call (fewer statements),
        in a transaction of its own; if that fails, `run_one` in a new transaction says
        what exactly is wrong (or succeeds)."""
        try:
            return [(self._in_transaction(lambda: kind.run_many(self.db, [item])[0]), None)]
        except _Down:
            raise
        except Exception:  # noqa: BLE001 - retried below for the precise outcome
            pass
        try:
            return [(self._in_transaction(lambda: kind.run_one(self.db, item)), None)]
        except _Down:
            raise
        except Exception as exc:  # reported to that caller only
            return [(None, exc)]

    def _commit_group(self, batch: list[_Op]) -> list[Outcome]:
        if len(batch) == 1:  # alone in its commit: no savepoint needed
            op = batch[0]
            failed: list[BaseException] = []

            def alone() -> Any:
                try:
                    return op.fn(self.db, *op.args)  # type: ignore[misc]
                except Exception as exc:
                    failed.append(exc)
                    raise

            try:
                return [(self._in_transaction(alone), None)]
            except _Down:
                raise
            except Exception as exc:
                if not failed or failed[0] is not exc:
                    logger.exception("commit of 1 operation failed")
                return [(None, exc)]
        try:
            return self._in_transaction(lambda: self._run_ops(batch))
        except _Down:
            raise
        except Exception as exc:
            logger.exception("group commit of %d operations failed", len(batch))
            return [(None, exc)] * len(batch)

    def _run_ops(self, batch: list[_Op]) -> list[Outcome]:
        outcomes: list[Outcome] = []
        i = 0
        while i < len(batch):
            j = i + 1
            if batch[i].batch is not None:
                while j < len(batch) and batch[j].batch is batch[i].batch:
                    j += 1
            outcomes.extend(self._run_group(batch[i:j]))
            i = j
        return outcomes

    def _one(self, fn: Callable[..., Any], *args: Any) -> Outcome:
        try:
            with self.db.savepoint():
                return fn(self.db, *args), None
        except Exception as exc:  # reported to that caller only
            self._check_transaction(exc)
            return None, exc

    def _run_group(self, ops: list[_Op]) -> list[Outcome]:
        """Run consecutive ops: a plain op alone, a batch's items in one call."""
        kind = ops[0].batch
        if kind is None:
            return [self._one(op.fn, *op.args) for op in ops]  # type: ignore[arg-type]
        items = [op.args[0] for op in ops]
        try:
            with self.db.savepoint():
                results = kind.run_many(self.db, items)
            return [(r, None) for r in results]
        except Exception as exc:
            self._check_transaction(exc)  # else find the culprit item by item
        return [self._one(lambda db, it: kind.run_one(db, it), item) for item in items]

    def _try_commit(self, batch: list[_Op]) -> list[Outcome]:
        if len(batch) == 1 and batch[0].batch is not None:
            return self._commit_lone_item(batch[0].batch, batch[0].args[0])
        return self._commit_group(batch)

    def _commit(self, batch: list[_Op]) -> None:
        try:
            outcomes = self._try_commit(batch)
            if self._outages.since is not None:
                self._outages.succeeded()
        except _Down as down:
            outcomes = self._after_outage(batch, down)
        for op, (result, error) in zip(batch, outcomes, strict=True):
            try:
                op.loop.call_soon_threadsafe(_resolve, op.future, result, error)
            except RuntimeError:  # the loop is closed: nobody waits any more
                pass

    def _after_outage(self, batch: list[_Op], down: _Down) -> list[Outcome]:
        """Retry a commit whose connection was lost before COMMIT (the server rolled it
        back), once, on a new connection; else refuse every caller."""
        if down.outage.connection_lost and not down.at_commit:
            try:
                outcomes = self._try_commit(batch)
            except _Down as again:
                down = again
            else:
                logger.warning(
                    "database connection lost during a commit of %d operations (%s); "
                    "committed on a new connection", len(batch), down.outage.detail,
                )
                if self._outages.since is not None:
                    self._outages.succeeded()
                return outcomes
        message = self._outages.failed(down.outage, len(batch), outcome_unknown=down.at_commit)
        outcomes = []
        for _op in batch:
            error = DatabaseUnavailable(message)
            error.__cause__ = down.error
            outcomes.append((None, error))
        return outcomes
