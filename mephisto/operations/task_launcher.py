"""Create a run's assignments and units from the blueprint's data, and launch them.

The data may be a list (everything is created at once, so progress knows the total) or
an iterator/generator (created in chunks as the run needs more). Units are created in
bulk, launched through the provider in one call per chunk, and marked LAUNCHED in bulk;
with `max_num_concurrent_units` at most that many are launched and not yet finished at
any time, and finishing one launches the next.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections import deque
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from mephisto.data_model.assignment import InitializationData
from mephisto.data_model.status import AssignmentState
from mephisto.errors import ConfigError
from mephisto.operations.live_run import UnitInfo

if TYPE_CHECKING:
    from mephisto.operations.live_task_run import LiveTaskRun

logger = logging.getLogger(__name__)

CHUNK = 20_000


def unit_init_data(data: InitializationData, unit_index: int) -> Any:
    """What a unit's worker is given: the shared data with the unit's own on top."""
    own = data.unit_data[unit_index] if unit_index < len(data.unit_data) else {}
    if isinstance(data.shared, dict) and isinstance(own, dict):
        return {**data.shared, **own}
    return own or data.shared


def _as_init_data(item: Any) -> InitializationData:
    if isinstance(item, InitializationData):
        return item
    if isinstance(item, dict) and "shared" in item and "unit_data" in item:
        return InitializationData.from_dict(item)
    raise ConfigError(
        f"the blueprint's data must be InitializationData items, got {type(item).__name__}"
    )


class TaskLauncher:
    def __init__(self, run: LiveTaskRun, data: Iterable[Any], skip: int = 0) -> None:
        self.run = run
        self._sized = hasattr(data, "__len__")
        self._items: Iterator[Any] = itertools.islice(iter(data), skip, None)
        self._exhausted = False
        self._created: deque[UnitInfo] = deque()  # created, not launched
        self.live = 0  # launched and not finished
        self._lock = asyncio.Lock()
        self.max_concurrent = int(run.task_args.max_num_concurrent_units or 0)

    def can_launch_more(self) -> bool:
        """Units remain to be launched and the concurrency cap has room for one."""
        return self.has_more() and (not self.max_concurrent or self.live < self.max_concurrent)

    @property
    def unlaunched(self) -> int:
        """Units created but not launched yet."""
        return len(self._created)

    def has_more(self) -> bool:
        """Units remain to be launched: created, still to come from the data, or being
        created/launched right now (a fill in progress)."""
        return bool(self._created) or not self._exhausted or self._lock.locked()

    async def start(self) -> None:
        """Create what is known up front, then launch up to the concurrency cap."""
        if self._sized:
            while not self._exhausted:
                await self._create(CHUNK)
        await self.fill()

    def add_created(self, units: list[UnitInfo]) -> None:
        """Units that exist in the database but were never launched (resume)."""
        self._created.extend(units)

    async def fill(self) -> None:
        """Launch more units while under the cap and any are left."""
        async with self._lock:
            cap = self.max_concurrent or float("inf")
            while self.live < cap and not self.run.closing:
                if not self._created:
                    if self._exhausted:
                        break
                    await self._create(CHUNK if self.max_concurrent == 0 else max(1, self.max_concurrent))
                    continue
                room = cap - self.live
                count = int(min(len(self._created), room, CHUNK))
                batch = [self._created.popleft() for _ in range(count)]
                await self._launch(batch)
        self.run.check_done()

    async def _create(self, n: int) -> None:
        items = [_as_init_data(x) for x in itertools.islice(self._items, n)]
        if len(items) < n:
            self._exhausted = True
        if not items:
            return
        run = self.run
        created = await run.writer.run(
            _create_units,
            run.task_run_id,
            [d.to_dict() for d in items],
            float(run.task_args.task_reward),
            [max(1, len(d.unit_data)) for d in items],
        )
        for data, (assignment_id, unit_ids) in zip(items, created, strict=True):
            for index, unit_id in enumerate(unit_ids):
                self._created.append(
                    UnitInfo(unit_id, assignment_id, index, float(run.task_args.task_reward),
                             unit_init_data(data, index))
                )
        run.progress.total += sum(len(u) for _a, u in created)

    async def _launch(self, batch: list[UnitInfo]) -> None:
        run = self.run
        await run.in_thread(run.provider.launch_units, batch, run.url)
        await run.writer.run(_mark_launched, [u.unit_id for u in batch])
        for unit in batch:
            run.pool.open.add(unit)
        self.live += len(batch)

    def unit_finished(self) -> None:
        """A launched unit reached a final status; maybe launch another."""
        self.live -= 1
        if self.max_concurrent and self.has_more():
            self.run.spawn(self.fill())

    def take_unlaunched(self) -> list[UnitInfo]:
        units = list(self._created)
        self._created.clear()
        self._exhausted = True
        return units


def _create_units(
    db: Any, task_run_id: str, data: list[dict[str, Any]], reward: float, counts: list[int]
) -> list[tuple[str, list[str]]]:
    return db.new_assignments_with_units(task_run_id, data, reward, counts, AssignmentState.CREATED)


def _mark_launched(db: Any, unit_ids: list[str]) -> int:
    return db.update_units_status(unit_ids, AssignmentState.LAUNCHED)
