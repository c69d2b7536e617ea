"""The supply of units: create a run's assignments and units from the blueprint's data,
launch them, and hand open units to the worker pool.

The data may be a list (everything is created at once, so progress knows the total) or
an iterator/generator (created in chunks as the run needs more). Units are created in
bulk, launched through the provider in one call per chunk, and marked LAUNCHED in bulk;
with `max_num_concurrent_units` at most that many are launched and not yet finished at
any time, and finishing one launches the next. The launcher owns its units until they
are assigned: created ones, open (launched, unassigned) ones, and the count of launched
units not finished.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from mephisto.data_model.assignment import InitializationData
from mephisto.data_model.status import AssignmentState
from mephisto.data_model.unit import GOLD_UNIT_INDEX, SCREENING_UNIT_INDEX
from mephisto.db.batch import mark_launched
from mephisto.errors import BudgetExceeded, ConfigError
from mephisto.operations import budget
from mephisto.operations.live_run import OpenUnits, RunContext, RunEvents, UnitInfo, until_saved

logger = logging.getLogger(__name__)

CHUNK = 20_000


def unit_init_data(data: InitializationData, unit_index: int) -> Any:
    """What a unit's worker is given: the shared data with the unit's own on top."""
    own = data.unit_data[unit_index] if 0 <= unit_index < len(data.unit_data) else {}
    if isinstance(data.shared, dict) and isinstance(own, dict):
        return {**data.shared, **own}
    return own or data.shared


def _count_units(data: Iterable[Any]) -> int:
    """Units a sized data set makes (an assignment makes one per `unit_data` item, at
    least one) without converting its items."""
    if not isinstance(data, Sequence):
        return len(data)  # type: ignore[arg-type]
    count = 0
    for item in data:
        unit_data = item.get("unit_data") if isinstance(item, dict) and "shared" in item \
            else getattr(item, "unit_data", None)
        count += max(1, len(unit_data)) if isinstance(unit_data, Sequence) else 1
    return count


def _as_init_data(item: Any) -> InitializationData:
    if isinstance(item, InitializationData):
        return item
    if isinstance(item, dict) and "shared" in item and "unit_data" in item:
        return InitializationData.from_dict(item)
    raise ConfigError(
        f"the blueprint's data must be InitializationData items, got {type(item).__name__}"
    )


class TaskLauncher:
    def __init__(self, ctx: RunContext, events: RunEvents) -> None:
        self.ctx = ctx
        self.events = events
        self.url = ""
        self._sized = False
        self._items: Iterator[Any] = iter(())
        self._exhausted = False
        self._unsaved: list[InitializationData] = []  # taken from the data, not yet created
        self._created: deque[UnitInfo] = deque()  # created, not launched
        self._open = OpenUnits()  # launched, nobody works on them
        self.live = 0  # launched and not finished
        self._lock = asyncio.Lock()
        self._closed = False
        self._started = False  # the first units were created (a cap then stops, not fails)
        self.max_concurrent = int(ctx.task_args.max_num_concurrent_units or 0)

    # -- what the pool and the owner ask ----------------------------------------------------

    def can_launch_more(self) -> bool:
        """Units remain to be launched and the concurrency cap has room for one."""
        return self.has_more() and (not self.max_concurrent or self.live < self.max_concurrent)

    def has_more(self) -> bool:
        """Units remain to be launched: created, still to come from the data, or being
        created/launched right now (a fill in progress)."""
        return (bool(self._created) or bool(self._unsaved) or not self._exhausted
                or self._lock.locked())

    def has_open(self) -> bool:
        return bool(len(self._open))

    @property
    def unlaunched(self) -> int:
        """Units created but not launched yet."""
        return len(self._created)

    @property
    def open_count(self) -> int:
        """Units launched and open (nobody works on them)."""
        return len(self._open)

    async def take(self, acceptable: Callable[[UnitInfo], bool]) -> UnitInfo | None:
        unit = self._open.take(acceptable)
        if unit is None and self.can_launch_more():
            await self.fill()  # launch the next units now rather than turn the worker away
            unit = self._open.take(acceptable)
        return unit

    def give_back(self, unit: UnitInfo) -> None:
        self._open.add(unit)

    # -- starting ---------------------------------------------------------------------------

    def _use(self, url: str, data: Iterable[Any], skip: int) -> None:
        self.url = url
        self._sized = hasattr(data, "__len__")
        self._items = itertools.islice(iter(data), skip, None)

    async def start(self, url: str, data: Iterable[Any]) -> None:
        """Launch a new run's units from the blueprint's data (`preview`ed): create what
        is known up front, then launch up to the concurrency cap."""
        self._use(url, data, 0)
        if self._sized:
            while not self._exhausted:
                await self._create(CHUNK)
        await self.fill()

    async def preview(self, data: Iterable[Any]) -> None:
        """Before a new run is served: log what launching `data` will cost at most and
        where it leaves each budget; refuse it (`BudgetExceeded`) when the rewards and
        fees alone pass a cap."""
        await self.ctx.background.in_thread(self._preview, data)

    def _preview(self, data: Iterable[Any]) -> None:
        ctx = self.ctx
        units = _count_units(data) if hasattr(data, "__len__") else None
        reward = float(ctx.task_args.task_reward)
        planned = float(getattr(ctx.task_args, "planned_bonus_per_unit", 0) or 0)
        preview, caps = budget.cost_preview(ctx.writer.db, ctx.task_run_id, units, reward, planned)
        logger.info("task run %s %s", ctx.task_run_id, preview.text())
        for line in caps:
            logger.info("task run %s %s", ctx.task_run_id, line)
        if units:
            budget.check_spending(ctx.writer.db, ctx.task_run_id, preview.rewards,
                                  f"launching {units:,} units at ${reward:,.2f}")

    def restore(
        self, url: str, data: Iterable[Any], skip: int, open_units: list[UnitInfo],
        assigned: int, created: list[UnitInfo],
    ) -> None:
        """A resumed run's units: the blueprint's data past the `skip` assignments that
        exist, the open units, how many are assigned (launched, not finished), and the
        ones that exist but must be launched again."""
        self._use(url, data, skip)
        for unit in open_units:
            self._open.add(unit)
        self.live += len(open_units) + assigned
        self._created.extend(created)

    async def fill(self) -> None:
        """Launch more units while under the cap and any are left."""
        async with self._lock:
            cap = self.max_concurrent or float("inf")
            while self.live < cap and not self._closed:
                if not self._created:
                    if self._exhausted and not self._unsaved:
                        break
                    await self._create(CHUNK if self.max_concurrent == 0 else max(1, self.max_concurrent))
                    continue
                room = cap - self.live
                count = int(min(len(self._created), room, CHUNK))
                batch = [self._created.popleft() for _ in range(count)]
                await self._launch(batch)
        self.events.check_done()

    async def _create(self, n: int) -> None:
        if self._unsaved:  # a chunk whose creation failed: the data is not read twice
            items, self._unsaved = self._unsaved, []
        else:
            items = [_as_init_data(x) for x in itertools.islice(self._items, n)]
            if len(items) < n:
                self._exhausted = True
        if not items:
            return
        ctx = self.ctx
        reward = float(ctx.task_args.task_reward)
        try:
            created = await ctx.writer.run(
                budget.create_units_within_budget,
                ctx.task_run_id,
                [d.to_dict() for d in items],
                reward,
                [max(1, len(d.unit_data)) for d in items],
            )
        except BudgetExceeded as exc:
            if not self._started:
                raise
            # a stream of data ran into a cap mid-run: the units made so far carry on
            logger.error("task run %s stops launching units: %s", ctx.task_run_id, exc)
            self._unsaved, self._exhausted = [], True
            self.events.check_done()
            return
        except BaseException:
            self._unsaved = items
            raise
        for data, (assignment_id, unit_ids) in zip(items, created, strict=True):
            for index, unit_id in enumerate(unit_ids):
                self._created.append(
                    UnitInfo(unit_id, assignment_id, index, reward, unit_init_data(data, index))
                )
        self._started = True
        self.events.units_created(sum(len(u) for _a, u in created))

    async def _launch(self, batch: list[UnitInfo]) -> None:
        """Publish a batch and mark it launched; if either fails, the batch stays to be
        launched (a provider's `launch_units` must be idempotent per unit)."""
        ctx = self.ctx
        try:
            await ctx.background.in_thread(ctx.provider.launch_units, batch, self.url)
            await ctx.writer.run(mark_launched, [u.unit_id for u in batch])
        except BaseException:
            self._created.extendleft(reversed(batch))
            raise
        for unit in batch:
            self._open.add(unit)
        self.live += len(batch)

    # -- screening and gold units --------------------------------------------------------------

    async def launch_evaluation_unit(self, data: Any, unit_index: int) -> UnitInfo:
        """A unit made for one worker, outside the run's data: a screening unit
        (`SCREENING_UNIT_INDEX`) or a gold unit (`GOLD_UNIT_INDEX`) holding `data`. It is
        created launched, given straight to that worker (never published on the
        provider nor offered to others), paid like any unit, and counted under the
        budgets and the run's progress."""
        if unit_index not in (SCREENING_UNIT_INDEX, GOLD_UNIT_INDEX):
            raise ValueError(f"not a screening or gold unit index: {unit_index}")
        ctx = self.ctx
        init = _as_init_data(data) if not isinstance(data, dict) or "shared" in data \
            else InitializationData(shared=data, unit_data=[{}])
        reward = float(ctx.task_args.task_reward)
        kind = "screening" if unit_index == SCREENING_UNIT_INDEX else "gold"
        ((assignment_id, (unit_id,)),) = await ctx.writer.run(
            budget.create_units_within_budget, ctx.task_run_id, [init.to_dict()], reward,
            [1], str(AssignmentState.LAUNCHED), unit_index,
        )
        logger.debug("task run %s: %s unit %s made", ctx.task_run_id, kind, unit_id)
        self.live += 1
        self.events.units_created(1)
        return UnitInfo(unit_id, assignment_id, unit_index, reward, unit_init_data(init, 0))

    # -- units finishing ---------------------------------------------------------------------

    def unit_finished(self) -> None:
        """A launched unit reached a final status; maybe launch another."""
        self.live -= 1
        if self.max_concurrent and self.has_more():
            self.ctx.background.spawn(until_saved(self.fill))

    def close(self) -> tuple[list[UnitInfo], list[UnitInfo]]:
        """Stop launching: the open units and the never-launched ones, for the owner to
        expire. A unit freed later is expired with `unit_finished`."""
        self._closed = True
        self._exhausted = True
        self._unsaved = []
        open_units = self._open.drain()
        self.live -= len(open_units)
        unlaunched = list(self._created)
        self._created.clear()
        return open_units, unlaunched
