"""`chat`: several workers talk live in one assignment (a React page; two by default).

Each assignment has `units_per_assignment` units (at least 2); the workers who take
them wait until all have joined (their pages see the status "waiting"), then the
`ChatTaskRunner` runs a *world* for them: by default `RelayWorld`, which sends each
message a worker writes to everyone in the chat, labelled with its sender. A run script
can plug in its own world (`SharedChatTaskState.world_factory`: a ParlAI-style object
with `parley()` and `episode_done()`; no ParlAI needed) to add a bot, a script or
turn-taking.

The page's side (`useMephistoLiveTask` of mephisto-task):

- it sends `mephisto_bound_live_update` `{"text": "..."}` for a message;
- it gets `client_bound_live_update`s: `{"kind": "joined", "you": "Worker 1",
  "workers": ["Worker 1", "Worker 2"]}` when the chat begins, then `{"kind": "message",
  "sender": "Worker 2", "mine": false, "text": "...", "time": ...}` for every message
  (its own too, `mine: true`);
- each worker submits when done (`handleSubmit`); the chat ends when all have.

A worker who leaves once the chat began ends it for the others (status "partner
disconnect", shown by their pages); nobody joining within the runner's
`waiting_room_timeout` expires the waiting worker. Every message is recorded in each
agent's state (`live_updates`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

from mephisto.abstractions._subcomponents.task_runner import LiveAgent, TaskRunner
from mephisto.abstractions.blueprint import SharedTaskState
from mephisto.abstractions.blueprints.static_react_task import (
    StaticReactBlueprintArgs,
    StaticReactTaskBlueprint,
)
from mephisto.abstractions.blueprints.static_task import SharedStaticTaskState, StaticAgentState
from mephisto.data_model.agent import register_agent_state_class
from mephisto.errors import ConfigError

__all__ = [
    "BLUEPRINT_TYPE_CHAT",
    "ChatBlueprint",
    "ChatBlueprintArgs",
    "ChatTaskRunner",
    "RelayWorld",
    "SharedChatTaskState",
    "World",
]

BLUEPRINT_TYPE_CHAT = "chat"
POLL_SECONDS = 0.05  # how long the relay waits on one worker before looking at the next
MAX_MESSAGE = 5000  # characters of one chat message


class World(Protocol):
    """A chat's logic (ParlAI's shape): one `parley()` is one step (take what workers
    said, send what they should see); the chat goes on until `episode_done()`."""

    def parley(self) -> None:
        ...

    def episode_done(self) -> bool:
        ...


@dataclass
class ChatBlueprintArgs(StaticReactBlueprintArgs):
    """Arguments of `chat` (`mephisto.blueprint.*`): those of `static_react_task`, with
    two workers per assignment by default."""

    _blueprint_type: str = BLUEPRINT_TYPE_CHAT
    units_per_assignment: int = field(
        default=2, metadata={"help": "How many workers talk in each assignment (>= 2)."})


@dataclass
class SharedChatTaskState(SharedStaticTaskState):
    """`world_factory(agents, assignment)`: the world of one chat (None: `RelayWorld`)."""

    world_factory: Callable[[list[LiveAgent], Any], World] | None = None


class RelayWorld:
    """Everyone sees every message, labelled "Worker 1", "Worker 2", ... in the order
    they joined; the chat is done when every worker submitted."""

    def __init__(self, agents: list[LiveAgent]) -> None:
        self.agents = agents
        self.labels = {a.agent_id: f"Worker {i}" for i, a in enumerate(agents, 1)}
        for agent in agents:
            agent.observe({"kind": "joined", "you": self.labels[agent.agent_id],
                           "workers": list(self.labels.values())})

    def parley(self) -> None:
        for agent in self.agents:
            if agent.did_submit.is_set():
                continue
            message = agent.act(timeout=POLL_SECONDS)
            if isinstance(message, dict) and isinstance(message.get("text"), str) \
                    and message["text"].strip():
                self.send(agent, message["text"][:MAX_MESSAGE])

    def send(self, sender: LiveAgent, text: str) -> None:
        now = time.time()
        for agent in self.agents:
            if not agent.did_submit.is_set():
                agent.observe({"kind": "message", "sender": self.labels[sender.agent_id],
                               "mine": agent is sender, "text": text, "time": now})

    def episode_done(self) -> bool:
        return all(a.did_submit.is_set() for a in self.agents)


class ChatTaskRunner(TaskRunner):
    """Runs each assignment's world once all its workers have joined."""

    is_concurrent = True

    def run_assignment(self, assignment: Any, agents: list[LiveAgent]) -> None:
        factory = self.shared_state.world_factory
        world = factory(agents, assignment) if factory is not None else RelayWorld(agents)
        while not world.episode_done():
            world.parley()


class ChatAgentState(StaticAgentState):
    """Saved data of a chat unit: a static task's, and the chat as this worker saw it
    (`get_parsed_data()["messages"]`)."""

    def get_parsed_data(self) -> dict[str, Any]:
        data = super().get_parsed_data()
        data["messages"] = [u["data"] for u in self.get_live_updates()
                            if u.get("sender") == "mephisto" and isinstance(u.get("data"), dict)
                            and u["data"].get("kind") == "message"]
        return data


register_agent_state_class(BLUEPRINT_TYPE_CHAT, ChatAgentState)


class ChatBlueprint(StaticReactTaskBlueprint):
    """Several workers talking live in each assignment."""

    BLUEPRINT_TYPE = BLUEPRINT_TYPE_CHAT
    ArgsClass = ChatBlueprintArgs
    SharedStateClass = SharedChatTaskState
    AgentStateClass = ChatAgentState
    TaskRunnerClass: ClassVar[type[TaskRunner]] = ChatTaskRunner

    @classmethod
    def assert_task_args(cls, args: Any, shared_state: SharedTaskState) -> None:
        super().assert_task_args(args, shared_state)
        if int(args.blueprint.get("units_per_assignment", 2)) < 2:
            raise ConfigError("a chat needs at least two workers: units_per_assignment >= 2",
                              key="mephisto.blueprint.units_per_assignment")
        factory = getattr(shared_state, "world_factory", None)
        if factory is not None and not callable(factory):
            raise ConfigError("shared_state.world_factory must be a function "
                              "(agents, assignment) -> world", key="world_factory")
