"""The `TaskRunner`: Python that runs beside each live unit while its worker acts.

A blueprint names its runner (`Blueprint.TaskRunnerClass`); the run makes one per run
(`TaskRunner(task_run, args, shared_state)`). For each agent given a unit, the run
calls `run_unit(unit, agent)` in a thread of its own (off the event loop), and
`cleanup_unit(unit)` once it returns or raises. Static tasks keep the default: nothing
to run, the page submits.

Inside `run_unit`, `agent` is the live agent (`LiveAgent`):

- `agent.act(timeout)` returns the next `mephisto_bound_live_update` the page sent (its
  data), or None when nothing came within `timeout` seconds or the worker submitted;
- `agent.observe(data)` sends a `client_bound_live_update` to the page, in order, kept
  while the page is reconnecting;
- `agent.did_submit` is set once the submission is committed.

When the agent ends otherwise, `act` and `observe` raise the reason
(`AgentReturnedError`, `AgentDisconnectedError`, `AgentTimeoutError`,
`AgentShutdownError`: `mephisto.errors`), which ends `run_unit`; a runner may catch
them to clean up. Every live packet, both ways, is recorded with its time in the
agent's saved state (`live_updates`), so review sees the session as it happened.

A runner that only answers what the page sends (a call, a lookup) overrides
`handle_live_update(agent, data)` instead of `run_unit`: it is called for each update,
in order per agent, in a thread pool the run shares among its agents (no thread per
agent), and what it returns (if not None) is sent to the page as if observed.
`remote_procedure` works this way. With it, `act()` never sees the page's updates.

With `is_concurrent`, the units of one assignment are worked together: agents wait in
a waiting room (their pages see the status "waiting") until every unit of the
assignment has one, then all see "in task" and `run_assignment(assignment, agents)`
runs in one thread for them (`cleanup_assignment` after). Messages between the workers
go through it (`act` on one, `observe` on the others). If no one else joins within
`waiting_room_timeout` seconds, the waiting agents are expired; if one leaves once the
assignment began (returned, timed out, disconnected), the others are ended with the
status "partner disconnect", which their pages show, and the units go back to other
workers. `run_onboarding` / `cleanup_onboarding` are the hooks of a live onboarding
step (not used yet). Mephisto's names throughout.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

if TYPE_CHECKING:
    from mephisto.data_model.unit import Unit

__all__ = ["LiveAgent", "TaskRunner"]


class LiveAgent(Protocol):
    """What a runner gets for each agent at work (see the module doc)."""

    agent_id: str
    unit_id: str | None
    worker_name: str
    init_data: Any
    did_submit: threading.Event

    @property
    def db_id(self) -> str:
        ...

    def act(self, timeout: float | None = None) -> dict[str, Any] | None:
        ...

    def observe(self, data: dict[str, Any]) -> None:
        ...


class TaskRunner:
    """Runs a blueprint's Python beside its live units. Override `run_unit` (and
    `cleanup_unit`) for a live task; the default does nothing."""

    is_concurrent: ClassVar[bool] = False  # several workers live in one assignment
    # seconds the first worker of a concurrent assignment waits for the others
    waiting_room_timeout: ClassVar[float] = 300.0

    def __init__(self, task_run: Any, args: Any, shared_state: Any) -> None:
        self.task_run = task_run
        self.args = args
        self.shared_state = shared_state

    @property
    def runs_units(self) -> bool:
        """It overrides `run_unit`: a thread runs it beside each live agent."""
        return type(self).run_unit is not TaskRunner.run_unit

    @property
    def handles_updates(self) -> bool:
        """It overrides `handle_live_update`: the page's updates are calls to it."""
        return type(self).handle_live_update is not TaskRunner.handle_live_update

    @property
    def is_live(self) -> bool:
        """Whether this runner does anything beside a unit (else no session is made)."""
        return self.runs_units or self.handles_updates

    def get_init_data_for_agent(self, agent: LiveAgent) -> Any:
        """The data the agent's page starts from. Default: the unit's data."""
        return agent.init_data

    def run_unit(self, unit: Unit, agent: LiveAgent) -> None:
        """Work with one agent on one unit until it is done (see the module doc)."""

    def cleanup_unit(self, unit: Unit) -> None:
        """Called after `run_unit` returned or raised, whatever ended it (for a runner
        of `handle_live_update`: when the agent ended)."""

    def handle_live_update(self, agent: LiveAgent, data: Any) -> dict[str, Any] | None:
        """One update the page sent (see the module doc); the return value, if not
        None, is sent back to the page."""
        return None

    def run_assignment(self, assignment: Any, agents: list[LiveAgent]) -> None:
        """Work with the agents of one assignment together (`is_concurrent`)."""

    def cleanup_assignment(self, assignment: Any) -> None:
        """Called after `run_assignment` returned or raised."""

    def run_onboarding(self, agent: LiveAgent) -> None:
        """A live onboarding step (default: none; onboarding is a form)."""

    def cleanup_onboarding(self, agent: LiveAgent) -> None:
        """Called after `run_onboarding`."""
