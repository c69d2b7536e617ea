"""Live sessions: the blueprint's `TaskRunner.run_unit` beside each agent at work.

For a blueprint whose runner is live (`TaskRunner.is_live`), every agent given a unit
gets a `LiveSession`, the `LiveAgent` its `run_unit(unit, agent)` works with, in a
thread of its own. (A runner that overrides `handle_live_update` instead gets each of
the page's updates as a call, in order per agent, in one thread pool of the run,
`CALL_THREADS` threads: no thread per agent, two hand-offs per call and no polling;
what it returns goes back to the page.) The event loop and a runner thread meet in two
places only:

- pages' `mephisto_bound_live_update`s go into the session's inbox (a thread-safe
  queue) in arrival order; `act(timeout)` takes them out;
- `observe(data)` hands the data to the loop, which sends it to the page as a
  `client_bound_live_update`, one at a time in order; while the page has no socket
  (reloading, reconnecting) they wait, and go out when it is back.

Both directions are recorded with their time (`LiveSession.packets`) and saved in the
agent's state as `live_updates`: with the submission, or when the agent ends without
one. A session ends with its agent: submitted (`did_submit` is set, `act` returns
None), or returned, timed out, disconnected (the page gone longer than
`disconnect_grace` seconds: the agent is dropped and its unit goes back to others),
or the run shutting down; `act`/`observe` then raise the reason (`mephisto.errors`),
and `cleanup_unit` runs once `run_unit` is over.
"""

from __future__ import annotations

import asyncio
import logging
import queue
from concurrent.futures import ThreadPoolExecutor
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any

from mephisto.data_model import packets
from mephisto.data_model.status import AgentState
from mephisto.errors import (
    AgentDisconnectedError,
    AgentGoneError,
    AgentReturnedError,
    AgentShutdownError,
    AgentTimeoutError,
    MalformedRequest,
)

if TYPE_CHECKING:
    from mephisto.abstractions._subcomponents.task_runner import TaskRunner
    from mephisto.operations.live_run import AgentInfo, RunContext

logger = logging.getLogger(__name__)

__all__ = ["LiveSession", "LiveSessions"]

DISCONNECT_GRACE = 30.0  # seconds a live agent's page may be away before it is dropped
MAX_WAITING = 1000  # page updates a runner has not taken yet, per agent
MAX_RECORDED = 20_000  # packets recorded per agent (then a note that more were left out)
CALL_THREADS = 32  # threads answering `handle_live_update` calls, shared by a run's agents
_END = object()

_GONE: dict[str, type[AgentGoneError]] = {
    str(AgentState.RETURNED): AgentReturnedError,
    str(AgentState.DISCONNECT): AgentDisconnectedError,
    str(AgentState.TIMEOUT): AgentTimeoutError,
    str(AgentState.EXPIRED): AgentShutdownError,
}


class LiveSession:
    """One agent at work, as its runner sees it (the `LiveAgent` of `task_runner.py`)."""

    def __init__(self, host: LiveSessions, agent: AgentInfo) -> None:
        assert agent.unit is not None
        self.agent = agent
        self.agent_id = agent.agent_id
        self.unit_id: str | None = agent.unit.unit_id
        self.worker_name = agent.worker.worker_name
        self.init_data = agent.unit.init_data
        self.did_submit = threading.Event()
        self.packets: list[dict[str, Any]] = []
        self.thread: threading.Thread | None = None
        self._host = host
        self._inbox: queue.Queue[Any] = queue.Queue()
        self._outbox: deque[dict[str, Any]] = deque()  # the loop's side only
        self._sending = False
        self._calls: deque[Any] = deque()  # updates for handle_live_update (under _lock)
        self._calling = False  # a pool thread is answering them
        self._gone: AgentGoneError | None = None
        self._lock = threading.Lock()

    @property
    def db_id(self) -> str:
        return self.agent_id

    # -- the runner's side (its thread) ----------------------------------------------

    def act(self, timeout: float | None = None) -> dict[str, Any] | None:
        """The next update the page sent; None if none came within `timeout` seconds or
        the worker submitted. Raises the reason once the agent ended otherwise."""
        if self._gone is not None and self._inbox.empty():
            raise self._gone
        try:
            item = self._inbox.get(timeout=timeout)
        except queue.Empty:
            return None
        if item is _END:
            self._inbox.put(_END)  # every later call ends too
            if self._gone is not None:
                raise self._gone
            return None
        return item  # type: ignore[no-any-return]

    def observe(self, data: dict[str, Any]) -> None:
        """Send `data` to the page (`client_bound_live_update`), after what was sent
        before. Raises the reason once the agent ended; ignored after a submission."""
        if self._gone is not None:
            raise self._gone
        if self.did_submit.is_set():
            return
        if not isinstance(data, dict):
            raise TypeError(f"observe takes a dict, not {type(data).__name__}")
        self._record("mephisto", data)
        self._host.loop.call_soon_threadsafe(self._host.queue_send, self, data)

    # -- the loop's side ---------------------------------------------------------------

    def deliver(self, data: Any) -> None:
        if self._inbox.qsize() + len(self._calls) >= MAX_WAITING:
            raise MalformedRequest(f"more than {MAX_WAITING} live updates wait for the task: "
                                   "slow down")
        self._record("worker", data)
        if self._host.runner.handles_updates:
            with self._lock:
                self._calls.append(data)
                start, self._calling = not self._calling, True
            if start:
                self._host._pool().submit(self._host._answer_calls, self)
        else:
            self._inbox.put(data)

    def end(self, gone: AgentGoneError | None) -> None:
        """The agent ended: submitted (None) or gone for the given reason."""
        if gone is None:
            self.did_submit.set()
        else:
            self._gone = gone
        with self._lock:
            self._calls.clear()
        self._inbox.put(_END)

    def _record(self, sender: str, data: Any) -> None:
        with self._lock:
            if len(self.packets) < MAX_RECORDED:
                self.packets.append({"sender": sender, "time": time.time(), "data": data})
            elif len(self.packets) == MAX_RECORDED:
                self.packets.append({"sender": "mephisto", "time": time.time(),
                                     "data": {"note": "later packets were not recorded"}})

    def recorded(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self.packets)


class Room:
    """The agents of one assignment of a concurrent runner (see `task_runner.py`)."""

    def __init__(self, assignment_id: str) -> None:
        self.assignment_id = assignment_id
        self.size: int | None = None  # units of the assignment, once read
        self.sessions: dict[str, LiveSession] = {}  # in the order they joined
        self.started = False
        self.timer: asyncio.TimerHandle | None = None
        self.thread: threading.Thread | None = None


class LiveSessions:
    """The live sessions of one run (see the module doc)."""

    def __init__(self, ctx: RunContext, runner: TaskRunner,
                 drop: Callable[[AgentInfo, AgentState], Coroutine[Any, Any, None]],
                 notify: Callable[[AgentInfo], Awaitable[None]] | None = None) -> None:
        self.ctx = ctx
        self.runner = runner
        self.loop = asyncio.get_running_loop()
        self.sessions: dict[str, LiveSession] = {}
        self.rooms: dict[str, Room] = {}  # by assignment id (concurrent runners)
        # units of concurrent assignments that someone already submitted: a unit of
        # such an assignment whose worker left is expired, not offered again
        self._retired: set[str] = set()
        self.disconnect_grace = DISCONNECT_GRACE
        self.waiting_room_timeout = float(runner.waiting_room_timeout)
        self._drop = drop
        self._notify = notify
        self._away: dict[str, asyncio.TimerHandle] = {}
        self._calls_pool: ThreadPoolExecutor | None = None

    @property
    def live(self) -> bool:
        return self.runner.is_live or self.runner.is_concurrent

    def start(self, agent: AgentInfo) -> None:
        """An agent was given a unit: run the runner beside it."""
        if not self.live or agent.unit is None or agent.agent_id in self.sessions:
            return
        session = self.sessions[agent.agent_id] = LiveSession(self, agent)
        if self.runner.is_concurrent:
            self._join(agent, session)
            return
        if self.runner.runs_units:
            session.thread = threading.Thread(target=self._run, args=(session,), daemon=True,
                                              name=f"task-runner-{agent.agent_id[:8]}")
            session.thread.start()

    def _run(self, session: LiveSession) -> None:
        from mephisto.data_model.unit import Unit

        unit = None
        try:
            unit = Unit(self.ctx.writer.db, str(session.unit_id))
            self.runner.run_unit(unit, session)
        except AgentGoneError as exc:
            logger.info("agent %s: the task's run_unit ended: %s", session.agent_id,
                        type(exc).__name__)
        except Exception:
            logger.exception("agent %s: the task's run_unit failed", session.agent_id)
        finally:
            if unit is not None:
                try:
                    self.runner.cleanup_unit(unit)
                except Exception:
                    logger.exception("agent %s: cleanup_unit failed", session.agent_id)

    # -- several workers in one assignment ----------------------------------------------

    def _join(self, agent: AgentInfo, session: LiveSession) -> None:
        assert agent.unit is not None
        room = self.rooms.get(agent.unit.assignment_id)
        if room is None:
            room = self.rooms[agent.unit.assignment_id] = Room(agent.unit.assignment_id)
        room.sessions[agent.agent_id] = session
        agent.status = str(AgentState.WAITING)  # what its page sees until all have joined
        if room.timer is None and not room.started:
            room.timer = self.loop.call_later(
                self.waiting_room_timeout,
                lambda: self.ctx.background.spawn(self._waited_too_long(room)))
        self.ctx.background.spawn(self._maybe_begin(room))

    async def _maybe_begin(self, room: Room) -> None:
        if room.size is None:
            room.size = await self.ctx.writer.read(
                lambda db: len(db.find_units(assignment_id=room.assignment_id)))
        present = [s for s in room.sessions.values() if s.agent.active]
        if room.started or len(present) < room.size:
            for session in present:
                await self._tell(session.agent)
            return
        room.started = True
        if room.timer is not None:
            room.timer.cancel()
            room.timer = None
        for session in present:
            session.agent.status = str(AgentState.IN_TASK)
            await self._tell(session.agent)
        room.thread = threading.Thread(
            target=self._run_assignment, args=(room, present), daemon=True,
            name=f"task-runner-assignment-{room.assignment_id}")
        room.thread.start()

    async def _tell(self, agent: AgentInfo) -> None:
        if self._notify is not None:
            await self._notify(agent)

    def _run_assignment(self, room: Room, sessions: list[LiveSession]) -> None:
        from mephisto.data_model.assignment import Assignment

        assignment = None
        try:
            assignment = Assignment(self.ctx.writer.db, room.assignment_id)
            self.runner.run_assignment(assignment, list(sessions))
        except AgentGoneError as exc:
            logger.info("assignment %s: run_assignment ended: %s", room.assignment_id,
                        type(exc).__name__)
        except Exception:
            logger.exception("assignment %s: the task's run_assignment failed; its "
                             "workers' units are expired", room.assignment_id)
            self.loop.call_soon_threadsafe(self._abandon, room)
        finally:
            if assignment is not None:
                try:
                    self.runner.cleanup_assignment(assignment)
                except Exception:
                    logger.exception("assignment %s: cleanup_assignment failed",
                                     room.assignment_id)

    async def _waited_too_long(self, room: Room) -> None:
        room.timer = None
        if room.started:
            return
        waiting = [s.agent for s in room.sessions.values() if s.agent.active]
        logger.info("assignment %s: nobody else joined within %.0f s; %d agent(s) expired",
                    room.assignment_id, self.waiting_room_timeout, len(waiting))
        for agent in waiting:
            if not agent.busy:
                await self._drop(agent, AgentState.EXPIRED)

    def _abandon(self, room: Room) -> None:
        """The room's runner failed: its agents still at work are expired (their pages
        say so) and the assignment's units are not offered again."""
        for session in room.sessions.values():
            if session.unit_id is not None:
                self._retired.add(session.unit_id)
            if session.agent.active and not session.agent.busy:
                self.ctx.background.spawn(self._drop(session.agent, AgentState.EXPIRED))

    def retired(self, unit_id: str) -> bool:
        """A unit to expire rather than offer again (see `_left_room`)."""
        return unit_id in self._retired

    def _left_room(self, agent: AgentInfo, status: str) -> None:
        """An agent of a room ended: before the start it just leaves; after, a leaver
        ends the others' work (partner disconnect)."""
        assert agent.unit is not None
        room = self.rooms.get(agent.unit.assignment_id)
        if room is None:
            return
        if not room.started:
            room.sessions.pop(agent.agent_id, None)
        elif status != AgentState.COMPLETED:
            if any(s.did_submit.is_set() for s in room.sessions.values()):
                # part of the assignment is done: a new group could not finish it
                self._retired.update(s.unit_id for s in room.sessions.values()
                                     if s.unit_id is not None)
            for other in room.sessions.values():
                if other.agent is not agent and other.agent.active and not other.agent.busy:
                    self.ctx.background.spawn(
                        self._drop(other.agent, AgentState.PARTNER_DISCONNECT))
        if not any(s.agent.active for s in room.sessions.values()):
            if room.timer is not None:
                room.timer.cancel()
            self.rooms.pop(room.assignment_id, None)

    def _pool(self) -> ThreadPoolExecutor:
        if self._calls_pool is None:
            self._calls_pool = ThreadPoolExecutor(CALL_THREADS, thread_name_prefix="task-calls")
        return self._calls_pool

    def _answer_calls(self, session: LiveSession) -> None:
        """In a pool thread: the session's waiting updates through `handle_live_update`,
        one at a time in order (one thread per session at a time), each answer handed to
        the loop for the page. Returns when none is left."""
        while True:
            with session._lock:
                if not session._calls or session._gone is not None \
                        or session.did_submit.is_set():
                    session._calling = False
                    return
                data = session._calls.popleft()
            try:
                answer = self.runner.handle_live_update(session, data)
            except Exception:
                logger.exception("agent %s: handle_live_update failed", session.agent_id)
                continue
            if answer is not None and session._gone is None and not session.did_submit.is_set():
                session._record("mephisto", answer)
                self.loop.call_soon_threadsafe(self.queue_send, session, answer)

    def _cleanup_later(self, session: LiveSession) -> None:
        """A session without a runner thread ended: `cleanup_unit` in the pool."""
        from mephisto.data_model.unit import Unit

        def cleanup() -> None:
            try:
                self.runner.cleanup_unit(Unit(self.ctx.writer.db, str(session.unit_id)))
            except Exception:
                logger.exception("agent %s: cleanup_unit failed", session.agent_id)

        self._pool().submit(cleanup)

    # -- packets -------------------------------------------------------------------------

    def deliver(self, agent_id: str, data: Any) -> bool:
        """A page's live update; False if the agent has no live session."""
        session = self.sessions.get(agent_id)
        if session is None:
            return False
        session.deliver(data)
        return True

    def queue_send(self, session: LiveSession, data: dict[str, Any]) -> None:
        session._outbox.append(data)
        if not session._sending:
            self.ctx.background.spawn(self._flush(session))

    async def _flush(self, session: LiveSession) -> None:
        """Send what waits for the page, in order, while it has a socket."""
        if session._sending:
            return
        session._sending = True
        try:
            while session._outbox and session.agent.send is not None:
                send = session.agent.send
                try:
                    await send(packets.live_update(session.agent_id, session._outbox[0]))
                except Exception:  # the socket went away: keep it for the next one
                    if session.agent.send is send:
                        session.agent.send = None
                    break
                session._outbox.popleft()
        finally:
            session._sending = False

    def packets_of(self, agent_id: str) -> list[dict[str, Any]] | None:
        session = self.sessions.get(agent_id)
        return None if session is None else session.recorded()

    # -- the page coming and going ------------------------------------------------------

    def connected(self, agent: AgentInfo) -> None:
        timer = self._away.pop(agent.agent_id, None)
        if timer is not None:
            timer.cancel()
        session = self.sessions.get(agent.agent_id)
        if session is not None and session._outbox:
            self.ctx.background.spawn(self._flush(session))

    def disconnected(self, agent: AgentInfo) -> None:
        """The page's socket closed: if it is not back within `disconnect_grace`, the
        agent is dropped (status disconnect) and its unit goes to another worker."""
        if agent.agent_id not in self.sessions or agent.agent_id in self._away:
            return
        self._away[agent.agent_id] = self.loop.call_later(
            self.disconnect_grace,
            lambda: self.ctx.background.spawn(self._still_away(agent)))

    async def _still_away(self, agent: AgentInfo) -> None:
        self._away.pop(agent.agent_id, None)
        if agent.send is None and agent.active and not agent.busy:
            logger.info("agent %s: page gone for %.0f s; dropped", agent.agent_id,
                        self.disconnect_grace)
            await self._drop(agent, AgentState.DISCONNECT)

    # -- ending --------------------------------------------------------------------------

    def ended(self, agent: AgentInfo, status: str) -> None:
        """The agent reached a final status: end its session; what was recorded is saved
        with the agent (a submission saved it already)."""
        session = self.sessions.pop(agent.agent_id, None)
        timer = self._away.pop(agent.agent_id, None)
        if timer is not None:
            timer.cancel()
        if session is None:
            return
        if self.runner.is_concurrent:
            self._left_room(agent, status)
        elif session.thread is None:
            self._cleanup_later(session)
        if status == AgentState.COMPLETED:
            session.end(None)
            return
        session.end(_GONE.get(status, AgentShutdownError)(f"agent {agent.agent_id}: {status}"))
        recorded = session.recorded()
        if recorded:
            self.ctx.background.spawn(self.ctx.writer.run(
                _save_recorded, agent.agent_id, recorded))

    async def shutdown(self, timeout: float = 5.0) -> None:
        """The run stops: every session ends (`AgentShutdownError`); wait a little for
        the runners to return."""
        threads = []
        for session in list(self.sessions.values()):
            session.end(AgentShutdownError("the run is shutting down"))
            if session.thread is not None:
                threads.append(session.thread)
            elif not self.runner.is_concurrent:
                self._cleanup_later(session)
        self.sessions.clear()
        for timer in self._away.values():
            timer.cancel()
        self._away.clear()
        for room in self.rooms.values():
            if room.timer is not None:
                room.timer.cancel()
            if room.thread is not None:
                threads.append(room.thread)
        self.rooms.clear()
        deadline = time.monotonic() + timeout

        def join() -> None:
            for thread in threads:
                thread.join(max(0.0, deadline - time.monotonic()))

        if threads:
            await self.ctx.background.in_thread(join)
        stuck = [t.name for t in threads if t.is_alive()]
        if stuck:
            logger.warning("task runners still running at shutdown: %s", ", ".join(stuck))
        if self._calls_pool is not None:
            pool, self._calls_pool = self._calls_pool, None
            await self.ctx.background.in_thread(pool.shutdown)


def _save_recorded(db: Any, agent_id: str, recorded: list[dict[str, Any]]) -> None:
    db.update_agent(agent_id, state={"live_updates": recorded})
