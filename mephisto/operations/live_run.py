"""In-memory state of a task run while it is live, and what its parts share.

The operator's process is the only writer of a live run, so this state is authoritative
and the database is its durable copy: every change here is committed (through the
`DBWriter`) before anyone is told about it. Keeping it in memory is what lets a
request be served without reading the database.

A live run has four parts (see `live_task_run.py` for the picture). Each is given a
`RunContext` when it is made (ids, config snapshots, the writer, the provider and
blueprint, metrics, the background-task door) and reports what happens through
`RunEvents`, which the owner (`LiveTaskRun`) implements; no part reads or writes
another part's attributes, and the progress counters have one owner.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
import time
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from mephisto.data_model.status import AgentState
from mephisto.errors import DatabaseUnavailable, ProviderError
from mephisto.utils.args import Args

if TYPE_CHECKING:
    from mephisto.abstractions.blueprint import Blueprint, SharedTaskState
    from mephisto.abstractions.crowd_provider import CrowdProvider
    from mephisto.db.writer import DBWriter
    from mephisto.operations.metrics import RunMetrics

logger = logging.getLogger(__name__)
T = TypeVar("T")

# Seconds between tries of a write the run cannot do without (then the last, again).
RETRY_DELAYS = (0.5, 1.0, 2.0, 5.0)


async def until_saved(call: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """`await call()`, again and again while the database is unavailable (the writer
    logs the outage once) or the crowd provider fails in a way worth retrying (logged
    here), waiting longer each time. For work a run cannot carry on without: finishing,
    freeing a timed-out unit, launching. Other errors (and the writer shutting down)
    pass through."""
    for attempt in itertools.count():
        try:
            return await call()
        except DatabaseUnavailable:
            pass
        except ProviderError as exc:
            if not exc.retryable:
                raise
            logger.warning("%s; trying again", exc)
        await asyncio.sleep(RETRY_DELAYS[min(attempt, len(RETRY_DELAYS) - 1)])
    raise AssertionError("unreachable")  # pragma: no cover


@dataclass(slots=True)
class UnitInfo:
    unit_id: str
    assignment_id: str
    unit_index: int
    pay_amount: float
    init_data: Any

    @property
    def db_id(self) -> str:
        return self.unit_id


@dataclass(slots=True)
class WorkerInfo:
    worker_id: str
    worker_name: str
    assignments: set[str] = field(default_factory=set)  # assignments of this run worked on
    active: int = 0  # agents in progress in this run
    task_units: int = 0  # units of this task (all runs) counted toward the maximum
    granted: dict[str, int] = field(default_factory=dict)
    blocked: bool = False
    standing_at: float = 0.0  # when `granted`/`blocked` were read
    # the run script's checks of this worker's submissions (`on_unit_submitted`) still
    # running: their next unit is decided once these are done
    checks: set[asyncio.Future[None]] = field(default_factory=set)
    # one decision at a time per worker (request_agent, onboarding): parallel requests
    # of one worker see each other's agents instead of each making one
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


@dataclass(slots=True)
class AgentInfo:
    agent_id: str
    worker: WorkerInfo
    unit: UnitInfo | None  # None for onboarding agents
    status: str
    started: float
    provider_assignment: str | None = None
    timer: asyncio.TimerHandle | None = None
    # set while a write for it (submit, drop) is being committed; resolved when done
    pending: asyncio.Future[None] | None = None
    # its stored state may hold more than the run wrote when creating it (metadata): a
    # submit then merges with what is stored instead of superseding it
    state_extended: bool = False
    send: Any = None  # websocket send function, when one is bound

    @property
    def is_onboarding(self) -> bool:
        return self.unit is None

    @property
    def busy(self) -> bool:
        """A write for this agent is being committed."""
        return self.pending is not None

    @contextlib.contextmanager
    def saving(self) -> Iterator[None]:
        """Mark the agent busy while a write for it is committed; whoever waits on
        `pending` is woken when it is over, whatever the outcome."""
        future = self.pending = asyncio.get_running_loop().create_future()
        try:
            yield
        finally:
            self.pending = None
            future.set_result(None)

    @property
    def active(self) -> bool:
        return self.status in _ACTIVE


_ACTIVE = frozenset(str(s) for s in AgentState.active())


class OpenUnits:
    """Launched units nobody works on, lowest unit id first."""

    def __init__(self) -> None:
        self._heap: list[tuple[int, UnitInfo]] = []

    def __len__(self) -> int:
        return len(self._heap)

    def add(self, unit: UnitInfo) -> None:
        heapq.heappush(self._heap, (int(unit.unit_id), unit))

    def take(self, acceptable: Any) -> UnitInfo | None:
        """Remove and return the lowest unit for which `acceptable(unit)` holds."""
        skipped: list[tuple[int, UnitInfo]] = []
        found = None
        while self._heap:
            item = heapq.heappop(self._heap)
            if acceptable(item[1]):
                found = item[1]
                break
            skipped.append(item)
        for item in skipped:
            heapq.heappush(self._heap, item)
        return found

    def drain(self) -> list[UnitInfo]:
        units = [u for _k, u in self._heap]
        self._heap.clear()
        return units


@dataclass
class RunProgress:
    """Counts a run's units as they move; `pending` reaching 0 ends the run."""

    total: int = 0  # units created so far
    completed: int = 0  # submitted (completed or already reviewed)
    expired: int = 0
    started_at: float = field(default_factory=time.monotonic)
    last_submit_at: float = field(default_factory=time.monotonic)

    @property
    def pending(self) -> int:
        return self.total - self.completed - self.expired

    def rate(self) -> float:
        elapsed = time.monotonic() - self.started_at
        return self.completed / elapsed if elapsed > 0 else 0.0


def agent_state(
    inputs: Any, started: float, provider_assignment: str | None,
    outputs: Any = None, ended: float | None = None,
) -> dict[str, Any]:
    """An agent's saved state as a live run writes it: when the agent is created, and
    (with `outputs` and `ended`) when it submits. Both have every key of `CREATION_KEYS`,
    so a submission's state supersedes the state written at creation."""
    times = {"task_start": started} if ended is None else {"task_start": started,
                                                             "task_end": ended}
    return {"inputs": inputs, "outputs": outputs, "times": times,
            "provider_assignment_id": provider_assignment}


CREATION_KEYS = frozenset(agent_state(None, 0.0, None))


class Background:
    """The one door to work off the request path: background coroutines (whose failure
    is logged, not lost) and blocking calls (user callbacks, provider SDKs) in threads."""

    def __init__(self, loop: asyncio.AbstractEventLoop, name: str) -> None:
        self.loop = loop
        self.name = name
        self.tasks: set[asyncio.Task[Any]] = set()

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = self.loop.create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("%s: background task failed", self.name, exc_info=task.exception())

    async def in_thread(self, fn: Callable[..., T], *args: Any) -> T:
        return await self.loop.run_in_executor(None, fn, *args)

    async def wait(self, timeout: float) -> None:
        """Wait (at most `timeout` seconds) for the background tasks running now."""
        if self.tasks:
            await asyncio.wait(list(self.tasks), timeout=timeout)


@dataclass(frozen=True, slots=True)
class RunContext:
    """What a live run's parts are given when they are made."""

    task_run_id: str
    task_id: str
    requester_id: str
    task_type: str
    provider_type: str
    task_name: str
    task_args: Args  # mephisto.task
    blueprint_args: Args  # mephisto.blueprint
    writer: DBWriter
    provider: CrowdProvider
    blueprint: Blueprint
    shared_state: SharedTaskState
    metrics: RunMetrics
    background: Background
    # qualification requirements that apply to this run's provider
    requirements: list[dict[str, Any]] = field(default_factory=list)
    # the qualification recording onboarding results; None: no onboarding
    onboarding_qualification: str | None = None


class RunEvents(Protocol):
    """What the parts report to the run's owner, which keeps the counters and decides
    what follows (launch more, end the run)."""

    def units_created(self, count: int) -> None:
        """`count` new units exist (the run's total grows)."""

    def unit_completed(self, agent: AgentInfo) -> None:
        """An agent's submission is committed: its unit is done."""

    def agent_started(self, agent: AgentInfo) -> None:
        """An agent was given a unit (or restored with one on resume)."""

    def agent_ended(self, agent: AgentInfo, status: str) -> None:
        """An agent reached a final status (submitted, returned, timed out, ...)."""

    def unit_freed(self, unit: UnitInfo) -> None:
        """An agent dropped out without submitting: its unit is open again."""

    def check_done(self) -> None:
        """Something changed that may end the run."""


class UnitSupply(Protocol):
    """Where the worker pool gets units from (the `TaskLauncher`)."""

    async def take(self, acceptable: Callable[[UnitInfo], bool]) -> UnitInfo | None:
        """The lowest open unit `acceptable` accepts, launching more first if none is
        open and more may be launched; None if there is none."""
        ...

    def give_back(self, unit: UnitInfo) -> None:
        """A unit taken but not assigned after all: open again."""

    def has_open(self) -> bool:
        """Some unit is open right now (maybe not acceptable to this worker)."""
        ...

    async def launch_evaluation_unit(self, data: Any, unit_index: int) -> UnitInfo:
        """A screening or gold unit made now for one worker."""
        ...

    def has_more(self) -> bool:
        """Units remain to be launched."""
        ...
