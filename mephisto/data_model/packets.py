"""What travels between the task server and workers' pages: packet and answer shapes.

The names and fields are those the `mephisto-task` 2.x client reads
(docs/wire-protocol.md). Everything the server and the live run send over a websocket
is built here, and the `/request_agent` answer's shape is declared here, so the wire
format has one home.
"""

from __future__ import annotations

import uuid
from typing import Any, TypedDict

# packet types (client -> server)
ALIVE = "alive"
HEARTBEAT = "heartbeat"
MEPHISTO_BOUND_LIVE_UPDATE = "mephisto_bound_live_update"
# packet types (server -> client)
UPDATE_STATUS = "update_status"
CLIENT_BOUND_LIVE_UPDATE = "client_bound_live_update"


class Packet(TypedDict, total=False):
    """A websocket packet: the client reads `packet_type` and `data` only."""

    packet_type: str
    subject_id: str
    data: dict[str, Any]


class AgentResponse(TypedDict, total=False):
    """`data` of a /request_agent or /submit_onboarding answer (mephisto-task 2.x).

    `agent_id` None means the worker is blocked; `failure_reason` says why.
    """

    agent_id: str | None
    worker_id: str | None
    init_task_data: Any
    failure_reason: str | None


def heartbeat(last_mephisto_ping_ms: int) -> Packet:
    """The answer to a client's heartbeat. The client compares the ping (milliseconds)
    with its own clock; echoing its own timestamp makes that immune to clock skew."""
    return {"packet_type": HEARTBEAT, "data": {"last_mephisto_ping": last_mephisto_ping_ms}}


def update_status(status: str) -> Packet:
    """An agent's status changed (`done`, `timeout`, `expired`, ...)."""
    return {"packet_type": UPDATE_STATUS, "data": {"status": status}}


def live_update(subject_id: str, data: dict[str, Any]) -> Packet:
    """Data for the page's `onLiveUpdate`. The client drops an update whose `update_id`
    it has seen, so every update gets a fresh one unless it carries its own."""
    return {
        "packet_type": CLIENT_BOUND_LIVE_UPDATE,
        "subject_id": subject_id,
        "data": {"update_id": str(uuid.uuid4()), **data},
    }
