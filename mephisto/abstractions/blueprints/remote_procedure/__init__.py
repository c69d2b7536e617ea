"""`remote_procedure`: a React task whose page calls named Python functions of the run
script while the worker works (a model in the loop, a lookup, a check).

The run script gives the functions in `SharedRemoteProcedureTaskState.function_registry`
(name -> `fn(request_id, args, agent_state)`, returning a JSON-able value, usually a
dict). The page calls one with `useMephistoRemoteProcedureTask`'s
`remoteProcedure("name")(args)`: a `mephisto_bound_live_update` `{request_id, target,
args: "<JSON>"}`; the `TaskRunner` here calls the function (`handle_live_update`: in
the run's pool of call threads, not a thread per agent) and answers with a
`client_bound_live_update` `{handles: request_id, response: "<JSON>"}`, or `{handles,
error}` when the function is unknown, the arguments are not JSON or the function
raised (the page's promise rejects with that message). An agent's calls are answered
one at a time, in the order they came; different agents' calls run at the same time.
Every request and answer is recorded in the agent's state (`live_updates`). Otherwise it is `static_react_task`: `task_source` is
the built bundle, one assignment per data item.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from mephisto.abstractions._subcomponents.task_runner import LiveAgent, TaskRunner
from mephisto.abstractions.blueprint import SharedTaskState
from mephisto.abstractions.blueprints.static_react_task import (
    StaticReactBlueprintArgs,
    StaticReactTaskBlueprint,
)
from mephisto.abstractions.blueprints.static_task import SharedStaticTaskState, StaticAgentState
from mephisto.data_model.agent import register_agent_state_class
from mephisto.errors import ConfigError

if TYPE_CHECKING:
    from mephisto.data_model.unit import Unit

logger = logging.getLogger(__name__)

__all__ = [
    "BLUEPRINT_TYPE_REMOTE_PROCEDURE",
    "RemoteProcedureAgentState",
    "RemoteProcedureBlueprint",
    "RemoteProcedureBlueprintArgs",
    "RemoteProcedureTaskRunner",
    "SharedRemoteProcedureTaskState",
    "answer_call",
]

BLUEPRINT_TYPE_REMOTE_PROCEDURE = "remote_procedure"
MAX_ERROR = 500  # characters of an error message sent to the page

RemoteFunction = Callable[[str, Any, Any], Any]


@dataclass
class RemoteProcedureBlueprintArgs(StaticReactBlueprintArgs):
    """Arguments of `remote_procedure` (`mephisto.blueprint.*`): those of
    `static_react_task`."""

    _blueprint_type: str = BLUEPRINT_TYPE_REMOTE_PROCEDURE


@dataclass
class SharedRemoteProcedureTaskState(SharedStaticTaskState):
    """The functions the page may call, by name: `fn(request_id, args, agent_state)`."""

    function_registry: dict[str, RemoteFunction] = field(default_factory=dict)


class RemoteProcedureAgentState(StaticAgentState):
    """Saved data of a remote-procedure unit: that of a static task, and the calls
    (`get_parsed_data()["requests"]`: each request with its answer)."""

    def get_parsed_data(self) -> dict[str, Any]:
        data = super().get_parsed_data()
        updates = self.get_live_updates()
        answers = {u["data"].get("handles"): u for u in updates
                   if u.get("sender") == "mephisto" and isinstance(u.get("data"), dict)}
        data["requests"] = [
            {"request_id": u["data"].get("request_id"), "target": u["data"].get("target"),
             "args": u["data"].get("args"), "time": u.get("time"),
             "answer": (answers.get(u["data"].get("request_id")) or {}).get("data")}
            for u in updates
            if u.get("sender") == "worker" and isinstance(u.get("data"), dict)
        ]
        return data


register_agent_state_class(BLUEPRINT_TYPE_REMOTE_PROCEDURE, RemoteProcedureAgentState)


def answer_call(registry: dict[str, RemoteFunction], request: Any,
                agent: LiveAgent) -> dict[str, Any]:
    """The answer to one call of the page (never raises: a failure is an `error`
    answer)."""
    if not isinstance(request, dict):
        return {"handles": None, "error": "a remote procedure request is an object"}
    request_id = request.get("request_id")
    target = request.get("target")
    function = registry.get(target) if isinstance(target, str) else None
    if function is None:
        known = ", ".join(sorted(registry)) or "none"
        return {"handles": request_id,
                "error": f"no remote procedure named {str(target)[:100]!r} (known: {known})"}
    raw = request.get("args")
    try:
        args = json.loads(raw) if isinstance(raw, str) else raw
    except ValueError as exc:
        return {"handles": request_id, "error": f"the arguments are not JSON: {exc}"}
    try:
        result = function(str(request_id), args, agent)
        response = json.dumps(result)
    except Exception as exc:
        logger.warning("remote procedure %s failed for agent %s: %r", target,
                       agent.agent_id, exc)
        return {"handles": request_id,
                "error": f"{target} failed: {type(exc).__name__}: {exc}"[:MAX_ERROR]}
    return {"handles": request_id, "response": response}


class RemoteProcedureTaskRunner(TaskRunner):
    """Answers each of the page's calls with the run script's functions."""

    def handle_live_update(self, agent: LiveAgent, data: Any) -> dict[str, Any] | None:
        return answer_call(self.shared_state.function_registry, data, agent)


class RemoteProcedureBlueprint(StaticReactTaskBlueprint):
    """A React task whose page calls the run script's Python functions live."""

    BLUEPRINT_TYPE = BLUEPRINT_TYPE_REMOTE_PROCEDURE
    ArgsClass = RemoteProcedureBlueprintArgs
    SharedStateClass = SharedRemoteProcedureTaskState
    AgentStateClass = RemoteProcedureAgentState
    TaskRunnerClass = RemoteProcedureTaskRunner

    @classmethod
    def assert_task_args(cls, args: Any, shared_state: SharedTaskState) -> None:
        super().assert_task_args(args, shared_state)
        registry = getattr(shared_state, "function_registry", None)
        if not isinstance(registry, dict) or not registry:
            raise ConfigError("remote_procedure needs shared_state.function_registry: a dict "
                              "of the functions the page may call, by name",
                              key="function_registry")
        for name, function in registry.items():
            if not isinstance(name, str) or not callable(function):
                raise ConfigError(f"function_registry[{name!r}] must be a function, named "
                                  "by a string", key="function_registry")
