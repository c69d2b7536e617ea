"""A reviewer's decision as the page sends it (JSON), checked and turned into a
`provider_review.Decision`. Anything unexpected is refused before anything happens.

    {"action": "approve" | "reject" | "soft_reject" | null, "note": "...",
     "bonus": 0.5, "bonus_reason": "...", "block": true, "block_reason": "...",
     "unblock": false, "grant": {"name": "trusted", "value": 1}, "revoke": "name",
     "send_feedback": false,          # also send the note to the worker as a message
     "unit_ids": ["1", "2"]}          # unit_ids: bulk decisions only
"""

from __future__ import annotations

from typing import Any

from mephisto.errors import MephistoError
from mephisto.tools.provider_review import Decision

__all__ = ["MAX_BULK", "BadRequest", "parse_decision", "parse_unit_ids"]

MAX_BULK = 500  # units in one bulk decision

_FIELDS = {"action", "note", "bonus", "bonus_reason", "block", "block_reason", "unblock",
           "grant", "revoke", "send_feedback"}


class BadRequest(MephistoError):
    """A request the review API refuses as it is; `status` is its HTTP status."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def _text(data: dict[str, Any], name: str) -> str | None:
    value = data.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise BadRequest(f"{name} is text, not {type(value).__name__}")
    return value.strip() or None


def _flag(data: dict[str, Any], name: str) -> bool:
    value = data.get(name, False)
    if not isinstance(value, bool):
        raise BadRequest(f"{name} is true or false, not {value!r}")
    return value


def parse_decision(data: Any, bulk: bool) -> Decision:
    """The decision in a request body (`BadRequest` for anything wrong with it)."""
    if not isinstance(data, dict):
        raise BadRequest("the body is a JSON object")
    allowed = _FIELDS | ({"unit_ids"} if bulk else set())
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise BadRequest(f"unknown field(s) {', '.join(unknown)}; "
                         f"valid: {', '.join(sorted(allowed))}")
    bonus = data.get("bonus")
    if bonus is not None and (isinstance(bonus, bool) or not isinstance(bonus, (int, float))):
        raise BadRequest(f"bonus is an amount of dollars, not {bonus!r}")
    grant = data.get("grant")
    grant_pair: tuple[str, int] | None = None
    if grant is not None:
        if not isinstance(grant, dict) or set(grant) - {"name", "value"}:
            raise BadRequest('grant is {"name": ..., "value": ...}')
        name, value = grant.get("name"), grant.get("value", 1)
        if not isinstance(name, str) or not name.strip():
            raise BadRequest("a grant needs a qualification name")
        if isinstance(value, bool) or not isinstance(value, int):
            raise BadRequest(f"a qualification's value is an integer, not {value!r}")
        grant_pair = (name.strip(), value)
    action = data.get("action")
    if action is not None and not isinstance(action, str):
        raise BadRequest(f"action is text, not {action!r}")
    decision = Decision(
        action=action or None, note=_text(data, "note"),
        bonus=None if bonus is None else float(bonus),
        bonus_reason=_text(data, "bonus_reason"), block=_flag(data, "block"),
        block_reason=_text(data, "block_reason"), unblock=_flag(data, "unblock"),
        grant=grant_pair, revoke=_text(data, "revoke"),
        send_feedback=_flag(data, "send_feedback"))
    try:
        decision.check()
    except MephistoError as exc:
        raise BadRequest(str(exc)) from None
    return decision


def parse_unit_ids(data: Any) -> list[str]:
    """The units of a bulk decision, in order, without repeats."""
    ids = data.get("unit_ids") if isinstance(data, dict) else None
    if not isinstance(ids, list) or not ids:
        raise BadRequest("unit_ids is a non-empty list of unit ids")
    if len(ids) > MAX_BULK:
        raise BadRequest(f"at most {MAX_BULK} units in one decision, not {len(ids)}")
    out: list[str] = []
    for uid in ids:
        if isinstance(uid, bool) or not isinstance(uid, (str, int)) or not str(uid).isdigit():
            raise BadRequest(f"{uid!r} is not a unit id")
        if str(uid) not in out:
            out.append(str(uid))
    return out
