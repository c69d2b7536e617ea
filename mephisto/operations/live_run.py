"""In-memory state of a task run while it is live.

The operator's process is the only writer of a live run, so this state is authoritative
and the database is its durable copy: every change here is committed (through the
`DBWriter`) before anyone is told about it. Keeping it in memory is what lets a
request be served without reading the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from mephisto.data_model.status import AgentState


class ArgsSnapshot(dict[str, Any]):
    """A config section as a plain dict readable like the DictConfig it came from
    (`args.task_reward`, `args.get("x")`). Reading a DictConfig costs microseconds per
    key; the hot paths read these on every request."""

    __slots__ = ()

    @classmethod
    def of(cls, section: Any) -> ArgsSnapshot:
        from omegaconf import DictConfig, OmegaConf

        if isinstance(section, DictConfig):
            section = OmegaConf.to_container(section, resolve=True)
        return cls(section or {})

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


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
