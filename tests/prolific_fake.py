"""A stateful fake of the parts of Prolific's API the `prolific` provider uses, behind
respx (`https://api.prolific.com`), so tests need no network.

It follows Prolific's published API reference: request bodies are checked field by
field (required fields present, no unknown field, types and enums), answers have the
documented shapes, study and submission statuses move as Prolific's do (a study whose
places are all taken and done moves to AWAITING REVIEW; raising its places makes it
ACTIVE again; the bonus pay call is not idempotent). A call the fake does not know is
answered 404 and recorded in `unknown`, which tests check is empty.

The participants' side is driven by the tests: `start` (a participant opens the study:
a submission), `complete` (the completion redirect with a code). `fail_next` makes the
next matching call fail: `connect` (never reaches Prolific), `timeout` (Prolific does
it, the answer is lost), `500` (a server error, nothing done), `400` (refused).
"""

from __future__ import annotations

import itertools
import json
import re
import secrets
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import parse_qs, urlparse

import httpx
import respx

BASE = "https://api.prolific.com"
GOOD_KEY = "good-prolific-token-0123456789"

STUDY_STATUSES = {"UNPUBLISHED", "PUBLISHING", "ACTIVE", "SCHEDULED", "PAUSED",
                  "AWAITING REVIEW", "COMPLETED"}
CODE_TYPES = {"COMPLETED", "FAILED_ATTENTION_CHECK", "FOLLOW_UP_STUDY", "GIVE_BONUS",
              "INCOMPATIBLE_DEVICE", "NO_CONSENT", "OTHER", "FIXED_SCREENOUT"}
CODE_ACTIONS = {"AUTOMATICALLY_APPROVE", "MANUALLY_REVIEW", "ADD_TO_PARTICIPANT_GROUP",
                "REMOVE_FROM_PARTICIPANT_GROUP", "REQUEST_RETURN", "DYNAMIC_PAYMENT",
                "FIXED_SCREEN_OUT_PAYMENT"}
REJECTION_CATEGORIES = {"TOO_QUICKLY", "TOO_SLOWLY", "FAILED_INSTRUCTIONS",
                        "INCOMP_LONGITUDINAL", "FAILED_CHECK", "LOW_EFFORT", "MALINGERING",
                        "NO_CODE", "BAD_CODE", "NO_DATA", "UNSUPP_DEVICE", "OTHER"}

_INT = "int"  # an int that is not a bool


@dataclass(frozen=True)
class Fields:
    """The documented fields of a request body: name -> type (or a checking function)."""

    required: dict[str, Any]
    optional: dict[str, Any] = field(default_factory=dict)


CREATE_STUDY = Fields(
    required={"name": str, "description": str, "external_study_url": str,
              "prolific_id_option": {"question", "url_parameters", "not_required"},
              "completion_codes": list, "total_available_places": _INT,
              "estimated_completion_time": _INT, "reward": (_INT, float)},
    optional={"internal_name": str, "maximum_allowed_time": _INT,
              "device_compatibility": list, "peripheral_requirements": list,
              "filters": list, "filter_set_id": str, "filter_set_version": _INT,
              "project": str, "submissions_config": dict, "study_labels": list,
              "content_warnings": list, "content_warning_details": str,
              "naivety_distribution_rate": (_INT, float), "is_custom_screening": bool,
              "metadata": (str, dict), "access_details": list, "credential_pool_id": str,
              "completion_code": str, "completion_option": {"url", "code"},
              "publish_at": str, "data_collection_method": str, "data_collection_id": str,
              "data_collection_metadata": dict, "study_type": {"SINGLE", "QUOTA"}},
)
UPDATE_PUBLISHED_STUDY = Fields(required={},
                                optional={"total_available_places": _INT, "internal_name": str})
TRANSITION_STUDY = Fields(required={"action": {"PUBLISH", "START", "PAUSE", "STOP"}})
TRANSITION_SUBMISSION = Fields(
    required={"action": {"APPROVE", "REJECT", "COMPLETE", "START", "UNREJECT", "RETURN",
                         "UNRETURN", "SCREEN_OUT"}},
    optional={"message": str, "rejection_category": REJECTION_CATEGORIES,
              "completion_code": str, "completion_code_data": dict})
SET_UP_BONUS = Fields(required={"study_id": str, "csv_bonuses": str})
CREATE_GROUP = Fields(required={"name": str},
                      optional={"workspace_id": str, "organisation_id": str,
                                "description": str, "participant_ids": list})
GROUP_MEMBERS = Fields(required={"participant_ids": list})
CREATE_PROJECT = Fields(required={"title": str},
                        optional={"description": str, "naivety_distribution_rate": float})
SEND_MESSAGE = Fields(required={"recipient_id": str, "body": str, "study_id": str})
SUBMISSIONS_CONFIG = Fields(
    required={}, optional={"max_submissions_per_participant": _INT,
                           "max_concurrent_submissions": _INT,
                           "auto_rejection_categories": list})


class Refused(Exception):
    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


def check(body: Any, spec: Fields, where: str) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise Refused(400, f"{where}: the body must be a JSON object")
    missing = sorted(set(spec.required) - set(body))
    unknown = sorted(set(body) - set(spec.required) - set(spec.optional))
    if missing or unknown:
        raise Refused(400, f"{where}: missing {missing}, unknown {unknown}")
    for name, value in body.items():
        expected = spec.required.get(name, spec.optional.get(name))
        if not _fits(value, expected):
            raise Refused(400, f"{where}: {name}={value!r} is not {expected}")
    return body


def _fits(value: Any, expected: Any) -> bool:
    if isinstance(expected, tuple):
        return any(_fits(value, e) for e in expected)
    if isinstance(expected, (set, frozenset)):
        return value in expected
    if expected == _INT:
        return isinstance(value, int) and not isinstance(value, bool)
    if expected is float:
        return isinstance(value, float)
    return isinstance(value, expected)


def _id() -> str:
    return secrets.token_hex(12)  # Prolific's ids: 24 hex characters


def _error(status: int, detail: str) -> httpx.Response:
    return httpx.Response(status, json={"error": {
        "status": status, "error_code": 140000 + status, "title": "Error", "detail": detail}})


class FakeProlific:
    def __init__(self, api_key: str = GOOD_KEY, balance_cents: int = 125_000) -> None:
        self.api_key = api_key
        self.me = {"id": _id(), "email": "researcher@example.org", "name": "Ada Researcher",
                   "currency_code": "GBP", "user_type": "researcher"}
        self.workspaces = [{"id": _id(), "title": "My Workspace", "description": "",
                            "owner": self.me["id"], "currency_code": "GBP"}]
        self.balance_cents = balance_cents
        self.projects: dict[str, dict[str, Any]] = {}
        self.studies: dict[str, dict[str, Any]] = {}
        self.submissions: dict[str, dict[str, Any]] = {}
        self.groups: dict[str, dict[str, Any]] = {}
        self.members: dict[str, list[str]] = {}
        self.bulk_bonuses: dict[str, dict[str, Any]] = {}
        self.messages: list[dict[str, Any]] = []  # sent to participants
        self.calls: list[tuple[str, str, Any]] = []
        self.unknown: list[str] = []
        self.pay_asynchronously = False  # paid bonuses show on submissions only on `settle`
        self._unsettled: list[str] = []
        self._failures: list[tuple[str, re.Pattern[str], str]] = []
        self._clock = itertools.count(1)

    # -- driving it -----------------------------------------------------------------------

    @contextmanager
    def running(self) -> Iterator[respx.MockRouter]:
        with respx.mock(base_url=BASE, assert_all_called=False) as router:
            router.route().mock(side_effect=self._handle)
            yield router

    def fail_next(self, method: str, path_pattern: str, mode: str) -> None:
        assert mode in ("connect", "timeout", "500", "400")
        self._failures.append((method, re.compile(path_pattern), mode))

    def start(self, study_id: str, participant_id: str) -> dict[str, Any]:
        """A participant opens the study: Prolific starts a submission (`SESSION_ID`)."""
        study = self.studies[study_id]
        assert study["status"] == "ACTIVE", f"study is {study['status']}: cannot be taken"
        assert study["places_taken"] < study["total_available_places"], "no place left"
        submission = {
            "id": _id(), "study_id": study_id, "participant": participant_id,
            "status": "ACTIVE", "started_at": self._now(), "completed_at": None,
            "entered_code": None, "bonus_payments": [], "return_requested": None,
            "parent_study_id": None,
        }
        self.submissions[submission["id"]] = submission
        study["places_taken"] += 1
        return submission

    def study_page(self, submission_id: str) -> str:
        """The URL Prolific sends the participant to: the placeholders filled in."""
        submission = self.submissions[submission_id]
        url = self.studies[submission["study_id"]]["external_study_url"]
        return (url.replace("{{%PROLIFIC_PID%}}", submission["participant"])
                   .replace("{{%STUDY_ID%}}", submission["study_id"])
                   .replace("{{%SESSION_ID%}}", submission_id))

    def complete(self, submission_id: str, code: str) -> None:
        """The participant reaches Prolific's completion URL with `cc=code`."""
        submission = self.submissions[submission_id]
        study = self.studies[submission["study_id"]]
        codes = {c["code"] for c in study["completion_codes"]}
        submission.update(status="AWAITING REVIEW", completed_at=self._now(),
                          entered_code=code if code in codes else "NOCODE")
        self._maybe_finished(study)

    def return_submission(self, submission_id: str) -> None:
        submission = self.submissions[submission_id]
        submission["status"] = "RETURNED"
        self.studies[submission["study_id"]]["places_taken"] -= 1

    def settle(self) -> None:
        """Prolific gets round to the bonuses it was asked to pay."""
        for bonus_id in self._unsettled:
            self._apply_bonus(self.bulk_bonuses[bonus_id])
        self._unsettled.clear()

    def the_study(self) -> dict[str, Any]:
        (study,) = self.studies.values()
        return study

    def bonuses_of(self, participant_id: str) -> list[float]:
        return [cents / 100 for s in self.submissions.values()
                if s["participant"] == participant_id for cents in s["bonus_payments"]]

    def group_named(self, name: str) -> dict[str, Any] | None:
        return next((g for g in self.groups.values() if g["name"] == name), None)

    # -- the API --------------------------------------------------------------------------

    def _handle(self, request: httpx.Request) -> httpx.Response:
        method, path = request.method, request.url.path
        body = json.loads(request.content) if request.content else None
        self.calls.append((method, path, body))
        for i, (m, pattern, mode) in enumerate(self._failures):
            if m == method and pattern.search(path):
                del self._failures[i]
                if mode == "connect":
                    raise httpx.ConnectError("connection refused", request=request)
                if mode in ("500", "400"):
                    return _error(int(mode), "Internal server error" if mode == "500"
                                  else "Insufficient balance to pay these bonuses.")
                self._dispatch(request, method, path, body)  # done, answer lost
                raise httpx.ReadTimeout("read timed out", request=request)
        return self._dispatch(request, method, path, body)

    def _dispatch(self, request: httpx.Request, method: str, path: str,
                  body: Any) -> httpx.Response:
        if request.headers.get("Authorization") != f"Token {self.api_key}":
            return _error(401, "Invalid token.")
        for verb, pattern, handler in self._routes():
            found = re.fullmatch(pattern, path)
            if verb == method and found:
                try:
                    status, answer = handler(body, request, *found.groups())
                except Refused as exc:
                    return _error(exc.status, exc.detail)
                return httpx.Response(status, json=answer)
        self.unknown.append(f"{method} {path}")
        return _error(404, "Not found.")

    def _routes(self) -> list[tuple[str, str, Callable[..., tuple[int, Any]]]]:
        v1 = "/api/v1"
        return [
            ("GET", f"{v1}/users/me/", lambda b, r: (200, self.me)),
            ("GET", f"{v1}/workspaces/", lambda b, r: (200, self._page(self.workspaces))),
            ("GET", f"{v1}/workspaces/(\\w+)/balance/", self._balance),
            ("GET", f"{v1}/workspaces/(\\w+)/projects/", self._list_projects),
            ("POST", f"{v1}/workspaces/(\\w+)/projects/", self._create_project),
            ("GET", f"{v1}/studies/", lambda b, r: (200, self._page(list(self.studies.values())))),
            ("POST", f"{v1}/studies/", self._create_study),
            ("GET", f"{v1}/studies/(\\w+)/", self._get_study),
            ("PATCH", f"{v1}/studies/(\\w+)/", self._update_study),
            ("POST", f"{v1}/studies/(\\w+)/transition/", self._transition_study),
            ("GET", f"{v1}/submissions/(\\w+)/", self._get_submission),
            ("POST", f"{v1}/submissions/(\\w+)/transition/", self._transition_submission),
            ("POST", f"{v1}/submissions/bonus-payments/", self._set_up_bonus),
            ("POST", f"{v1}/bulk-bonus-payments/(\\w+)/pay/", self._pay_bonus),
            ("GET", f"{v1}/participant-groups/", self._list_groups),
            ("POST", f"{v1}/participant-groups/", self._create_group),
            ("GET", f"{v1}/participant-groups/(\\w+)/participants/", self._list_members),
            ("POST", f"{v1}/participant-groups/(\\w+)/participants/", self._add_members),
            ("DELETE", f"{v1}/participant-groups/(\\w+)/participants/", self._remove_members),
            ("POST", f"{v1}/messages/", self._send_message),
        ]

    def _page(self, results: list[Any]) -> dict[str, Any]:
        return {"results": results, "_links": {"self": {"href": None}, "next": {"href": None},
                                              "previous": {"href": None}, "last": {"href": None}},
                "meta": {"count": len(results)}}

    def _now(self) -> str:
        return f"2026-01-01T00:00:{next(self._clock) % 60:02d}.000000Z"

    def _workspace(self, workspace_id: str) -> dict[str, Any]:
        found = [w for w in self.workspaces if w["id"] == workspace_id]
        if not found:
            raise Refused(404, "Workspace not found.")
        return found[0]

    def _balance(self, body: Any, request: httpx.Request, workspace_id: str) -> tuple[int, Any]:
        self._workspace(workspace_id)
        b = self.balance_cents
        split = {"rewards": round(b * 0.7), "fees": round(b * 0.25), "vat": round(b * 0.05)}
        return 200, {"currency_code": "GBP", "total_balance": b, "balance_breakdown": split,
                     "available_balance": b, "available_balance_breakdown": split}

    def _list_projects(self, body: Any, request: httpx.Request,
                       workspace_id: str) -> tuple[int, Any]:
        self._workspace(workspace_id)
        return 200, self._page([p for p in self.projects.values()
                                if p["workspace"] == workspace_id])

    def _create_project(self, body: Any, request: httpx.Request,
                        workspace_id: str) -> tuple[int, Any]:
        self._workspace(workspace_id)
        check(body, CREATE_PROJECT, "create project")
        project = {"id": _id(), "title": body["title"], "description": "",
                   "workspace": workspace_id, "owner": self.me["id"], "users": []}
        self.projects[project["id"]] = project
        return 201, project

    # -- studies ------------------------------------------------------------------------

    def _create_study(self, body: Any, request: httpx.Request) -> tuple[int, Any]:
        check(body, CREATE_STUDY, "create study")
        for code in body["completion_codes"]:
            check(code, Fields({"code": str, "code_type": CODE_TYPES, "actions": list}),
                  "completion code")
            for action in code["actions"]:
                if not isinstance(action, dict) or action.get("action") not in CODE_ACTIONS:
                    raise Refused(400, f"completion code action {action!r}")
        for item in body.get("filters", []):
            check(item, Fields({"filter_id": str},
                               {"selected_values": list, "selected_range": dict,
                                "weightings": dict}), "filter")
            if item["filter_id"].startswith("participant_group_"):
                for group_id in item.get("selected_values", []):
                    if group_id not in self.groups:
                        raise Refused(400, f"unknown participant group {group_id}")
        if "submissions_config" in body:
            check(body["submissions_config"], SUBMISSIONS_CONFIG, "submissions_config")
        if "project" in body and body["project"] not in self.projects:
            raise Refused(400, "Project not found.")
        url = body["external_study_url"]
        if body["prolific_id_option"] == "url_parameters" and "{{%PROLIFIC_PID%}}" not in url:
            raise Refused(400, "external_study_url must have {{%PROLIFIC_PID%}}")
        if urlparse(url).scheme not in ("http", "https") or body["total_available_places"] < 1:
            raise Refused(400, "invalid external_study_url or total_available_places")
        study = {
            "id": _id(), "status": "UNPUBLISHED", "places_taken": 0,
            "date_created": self._now(), "published_at": None, "currency_code": "GBP",
            "internal_name": body.get("internal_name") or body["name"],
            "filters": [], "device_compatibility": [], "peripheral_requirements": [],
            "submissions_config": {"max_submissions_per_participant": 1,
                                   "max_concurrent_submissions": -1},
            "maximum_allowed_time": body["estimated_completion_time"] * 3 + 2,
            "project": body.get("project"), "researcher": {"id": self.me["id"]},
        }
        study.update({k: v for k, v in body.items()})
        self.studies[study["id"]] = study
        return 201, study

    def _study(self, study_id: str) -> dict[str, Any]:
        if study_id not in self.studies:
            raise Refused(404, "Study not found.")
        return self.studies[study_id]

    def _get_study(self, body: Any, request: httpx.Request, study_id: str) -> tuple[int, Any]:
        return 200, self._study(study_id)

    def _update_study(self, body: Any, request: httpx.Request,
                      study_id: str) -> tuple[int, Any]:
        study = self._study(study_id)
        spec = CREATE_STUDY if study["status"] == "UNPUBLISHED" else UPDATE_PUBLISHED_STUDY
        check(body, Fields({}, {**spec.required, **spec.optional}), "update study")
        places = body.get("total_available_places")
        if places is not None and study.get("stopped"):
            raise Refused(400, "This study was stopped: stopping a study is final.")
        if places is not None and study["status"] != "UNPUBLISHED" and \
                places < study["total_available_places"]:
            raise Refused(400, "total_available_places can only be increased")
        study.update(body)
        if study["status"] in ("AWAITING REVIEW", "COMPLETED") and \
                study["total_available_places"] > study["places_taken"]:
            study["status"] = "ACTIVE"  # more places: taking participants again
        return 200, study

    def _transition_study(self, body: Any, request: httpx.Request,
                          study_id: str) -> tuple[int, Any]:
        study = self._study(study_id)
        action = check(body, TRANSITION_STUDY, "transition study")["action"]
        allowed = {"PUBLISH": ({"UNPUBLISHED"}, "ACTIVE"), "PAUSE": ({"ACTIVE"}, "PAUSED"),
                   "START": ({"PAUSED"}, "ACTIVE"),
                   "STOP": ({"ACTIVE", "PAUSED", "SCHEDULED"}, "AWAITING REVIEW")}
        sources, target = allowed[action]
        if study["status"] not in sources:
            raise Refused(400, f"cannot {action} a study that is {study['status']}")
        if action == "PUBLISH":
            cost = study["reward"] * study["total_available_places"]
            if cost > self.balance_cents:
                raise Refused(400, "Insufficient balance to publish this study.")
            study["published_at"] = self._now()
        study["status"] = target
        if action == "STOP":
            study["stopped"] = True
            self._maybe_finished(study, stopping=True)
        return 200, study

    def _maybe_finished(self, study: dict[str, Any], stopping: bool = False) -> None:
        mine = [s for s in self.submissions.values() if s["study_id"] == study["id"]]
        busy = any(s["status"] == "ACTIVE" for s in mine)
        full = study["places_taken"] >= study["total_available_places"]
        if (full or stopping) and not busy and study["status"] in ("ACTIVE", "AWAITING REVIEW"):
            waiting = any(s["status"] == "AWAITING REVIEW" for s in mine)
            study["status"] = "AWAITING REVIEW" if waiting or not mine else "COMPLETED"

    # -- submissions and bonuses -----------------------------------------------------------

    def _submission(self, submission_id: str) -> dict[str, Any]:
        if submission_id not in self.submissions:
            raise Refused(404, "Submission not found.")
        return self.submissions[submission_id]

    def _get_submission(self, body: Any, request: httpx.Request,
                        submission_id: str) -> tuple[int, Any]:
        return 200, self._submission(submission_id)

    def _transition_submission(self, body: Any, request: httpx.Request,
                               submission_id: str) -> tuple[int, Any]:
        submission = self._submission(submission_id)
        action = check(body, TRANSITION_SUBMISSION, "transition submission")["action"]
        done = {"APPROVE": "APPROVED", "REJECT": "REJECTED"}
        if action not in done:
            raise Refused(400, f"{action} is not used by these tests")
        if action == "REJECT" and (len(body.get("message", "")) < 100
                                   or "rejection_category" not in body):
            raise Refused(400, "a rejection needs a message of at least 100 characters "
                               "and a rejection_category")
        if submission["status"] == done[action]:
            return 200, submission  # idempotent: the same request again is ignored
        if submission["status"] != "AWAITING REVIEW":
            raise Refused(400, f"cannot {action} a submission that is {submission['status']}")
        submission["status"] = done[action]
        submission["review"] = body
        return 200, submission

    def _send_message(self, body: Any, request: httpx.Request) -> tuple[int, Any]:
        check(body, SEND_MESSAGE, "send message")
        if body["study_id"] not in self.studies:
            raise Refused(404, "Study not found.")
        if not any(s["participant"] == body["recipient_id"] and s["study_id"] == body["study_id"]
                   for s in self.submissions.values()):
            raise Refused(400, "The recipient has no submission in this study.")
        if not body["body"].strip():
            raise Refused(400, "body: This field may not be blank.")
        self.messages.append(dict(body))
        return 204, None

    def _set_up_bonus(self, body: Any, request: httpx.Request) -> tuple[int, Any]:
        check(body, SET_UP_BONUS, "set up bonuses")
        study = self._study(body["study_id"])
        lines = [line for line in body["csv_bonuses"].split("\n") if line.strip()]
        payments = []
        for line in lines:
            target, _, amount = line.partition(",")
            try:
                value = Decimal(amount)
            except InvalidOperation:
                raise Refused(400, f"bad amount in {line!r}") from None
            if value <= 0 or value.as_tuple().exponent < -2:  # type: ignore[operator]
                raise Refused(400, f"bad amount in {line!r}")
            found = [s for s in self.submissions.values() if s["study_id"] == study["id"]
                     and target in (s["id"], s["participant"])]
            if not found:
                raise Refused(400, f"{target} did not take part in study {study['id']}")
            payments.append((found[-1]["id"], float(value * 100)))
        amount = sum(cents for _s, cents in payments)
        fees = round(amount / 3, 2)
        bonus = {"id": _id(), "study": study["id"], "amount": amount, "fees": fees,
                 "vat": 0.0, "total_amount": amount + fees, "payments": payments,
                 "times_paid": 0}
        self.bulk_bonuses[bonus["id"]] = bonus
        return 201, {k: v for k, v in bonus.items() if k not in ("payments", "times_paid")}

    def _pay_bonus(self, body: Any, request: httpx.Request, bonus_id: str) -> tuple[int, Any]:
        if body not in (None, {}):
            raise Refused(400, "the pay call takes no body")
        if bonus_id not in self.bulk_bonuses:
            raise Refused(404, "Bulk bonus payment not found.")
        bonus = self.bulk_bonuses[bonus_id]
        bonus["times_paid"] += 1  # not idempotent, as documented
        if self.pay_asynchronously:
            self._unsettled.append(bonus_id)
        else:
            self._apply_bonus(bonus)
        return 202, (f"Bulk bonus payment with ID {bonus_id} is being processed "
                     "asynchronously. Payments will be completed shortly.")

    def _apply_bonus(self, bonus: dict[str, Any]) -> None:
        for submission_id, cents in bonus["payments"]:
            self.submissions[submission_id]["bonus_payments"].append(cents)

    # -- participant groups ----------------------------------------------------------------

    def _list_groups(self, body: Any, request: httpx.Request) -> tuple[int, Any]:
        workspace = parse_qs(request.url.query.decode()).get("workspace_id", [None])[0]
        return 200, self._page([g for g in self.groups.values()
                                if workspace is None or g["workspace_id"] == workspace])

    def _create_group(self, body: Any, request: httpx.Request) -> tuple[int, Any]:
        check(body, CREATE_GROUP, "create participant group")
        if "workspace_id" not in body and "organisation_id" not in body:
            raise Refused(400, "Either a workspace or organisation ID must be specified.")
        if "workspace_id" in body:
            self._workspace(body["workspace_id"])
        group = {"id": _id(), "name": body["name"], "workspace_id": body.get("workspace_id"),
                 "organisation_id": None, "project_id": None,
                 "description": body.get("description"), "participant_count": 0,
                 "is_deleted": False, "feeder_studies": []}
        self.groups[group["id"]] = group
        self.members[group["id"]] = list(body.get("participant_ids", []))
        group["participant_count"] = len(self.members[group["id"]])
        return 201, group

    def _group(self, group_id: str) -> list[str]:
        if group_id not in self.groups:
            raise Refused(404, "Participant group not found.")
        return self.members[group_id]

    def _member_page(self, group_id: str) -> dict[str, Any]:
        members = self._group(group_id)
        self.groups[group_id]["participant_count"] = len(members)
        return {"results": [{"participant_id": p, "datetime_created": "2026-01-01T00:00:00Z"}
                            for p in members]}

    def _list_members(self, body: Any, request: httpx.Request,
                      group_id: str) -> tuple[int, Any]:
        return 200, self._member_page(group_id)

    def _add_members(self, body: Any, request: httpx.Request,
                     group_id: str) -> tuple[int, Any]:
        ids = check(body, GROUP_MEMBERS, "add to participant group")["participant_ids"]
        members = self._group(group_id)
        members.extend(p for p in ids if p not in members)
        return 200, self._member_page(group_id)

    def _remove_members(self, body: Any, request: httpx.Request,
                        group_id: str) -> tuple[int, Any]:
        ids = check(body, GROUP_MEMBERS, "remove from participant group")["participant_ids"]
        members = self._group(group_id)
        members[:] = [p for p in members if p not in ids]
        return 200, self._member_page(group_id)
