# examples/chat_task/turn_world.py
"""A world to plug into the chat example instead of `RelayWorld`: workers write in
turns, and a moderator opens the chat with the topic and keeps the order.

    from turn_world import TurnTakingWorld
    SharedChatTaskState(static_task_data=TOPICS,
                        world_factory=lambda agents, assignment: TurnTakingWorld(agents))

It speaks the example page's protocol (`{"kind": "message", ...}`), so `webapp/` shows
the moderator's lines like a third participant's. See docs/chat.md.
"""

from __future__ import annotations

from typing import Any

from mephisto.abstractions._subcomponents.task_runner import LiveAgent
from mephisto.abstractions.blueprints.chat import MAX_MESSAGE, RelayWorld

MODERATOR = "Moderator"
POLL_SECONDS = 0.05  # how long one parley waits on each worker


class TurnTakingWorld(RelayWorld):
    """Worker 1, Worker 2, ... write one message each in turn. A message out of turn
    is not relayed: its writer alone gets a note. A worker who pressed Done loses their
    turn; the chat is over once everyone has (RelayWorld's `episode_done`)."""

    def __init__(self, agents: list[LiveAgent]) -> None:
        super().__init__(agents)  # labels "Worker 1", ... and the `joined` packets
        self.turn = 0  # index in self.agents of who writes next
        topic = (agents[0].init_data or {}).get("topic", "anything")
        for agent in agents:
            self.say(agent, f"Today's topic: {topic} {self.labels[agents[0].agent_id]} "
                            "starts; then take turns.")

    def say(self, agent: LiveAgent, text: str) -> None:
        """A moderator's line to one worker."""
        agent.observe({"kind": "message", "sender": MODERATOR, "mine": False,
                       "text": text, "time": None})

    def parley(self) -> None:
        self._skip_finished()
        for agent in self.agents:
            if agent.did_submit.is_set():
                continue
            message: Any = agent.act(timeout=POLL_SECONDS)
            text = message.get("text") if isinstance(message, dict) else None
            if not isinstance(text, str) or not text.strip():
                continue
            current = self.agents[self.turn]
            if agent is not current:
                self.say(agent, f"Please wait for {self.labels[current.agent_id]} to write.")
                continue
            self.send(agent, text[:MAX_MESSAGE])
            self.turn = (self.turn + 1) % len(self.agents)
            self._skip_finished()

    def _skip_finished(self) -> None:
        for _ in self.agents:
            if not self.agents[self.turn].did_submit.is_set():
                return
            self.turn = (self.turn + 1) % len(self.agents)
