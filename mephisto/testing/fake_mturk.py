"""A fake Amazon Mechanical Turk for tests and rehearsals: MTurk's requester API kept in
memory, behind real boto3 clients, reaching no network.

    fake = FakeMTurk(accounts={"AKIA...": "secret"})
    with fake.installed():          # every MTurk client of this process is fake now
        ...launch a run with the mturk or mturk_sandbox provider...
        assignment = fake.accept(hit_id, "A1WORKER")      # a worker takes a HIT

`installed()` puts `client` in as the provider's client factory
(`mephisto.abstractions.providers.mturk.client.use_client_factory`). A client is a real
boto3 `mturk` client on the requester's AWS profile (so the profile must have been
written), with a `before-call` handler that answers each call the way botocore's
`Stubber` does. botocore still checks every request against MTurk's service model
(types, required members); this module also checks the model's patterns, lengths and
enums, and every answer against the operation's output shape.

State is per account (access key id, live or sandbox): HIT types, HITs, assignments,
bonuses, blocks, qualification types and scores, used request tokens. Keys not in
`accounts` are refused as AWS refuses unknown keys. Workers act with `accept`, `submit`
(MTurk's external submit form) and `return_hit`; `fail_next` makes a call fail before or
after its effect (an answer lost on the way back).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import secrets
import string
import threading
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from functools import partial
from typing import Any
from urllib.parse import urlencode

from mephisto.abstractions.providers.mturk.client import (
    REGION,
    SANDBOX_ENDPOINT,
    require_boto3,
    use_client_factory,
)
from mephisto.testing.worker import SimulatedWorker, complete_unit

__all__ = ["FakeMTurk", "FakeMTurkError", "MTurkSimulatedWorker", "work_hit"]

_QUESTION_NS = ("http://mechanicalturk.amazonaws.com/AWSMechanicalTurkDataSchemas/"
                "2006-07-14/ExternalQuestion.xsd")
_SYSTEM_QUALIFICATION = re.compile(r"0{12}[0-9A-Z]{8}")  # MTurk's own: locale, approval rate
_ID_CHARS = string.ascii_uppercase + string.digits
_SECONDS = (30, 31536000)


class FakeMTurkError(Exception):
    """A worker's action the fake MTurk refuses (e.g. accepting a HIT not assignable)."""


class _Refused(Exception):
    """MTurk's answer to a bad request: an error code and message (HTTP 400 or 500)."""

    def __init__(self, code: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status


def _new_id(length: int = 30) -> str:
    return "".join(secrets.choice(_ID_CHARS) for _ in range(length))


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass
class FakeAssignment:
    assignment_id: str
    hit_id: str
    worker_id: str
    accept_time: datetime
    status: str = "Accepted"  # Accepted, Submitted, Approved, Rejected, Returned
    submit_time: datetime | None = None
    answer: dict[str, str] = field(default_factory=dict)
    feedback: str | None = None


@dataclass
class FakeHIT:
    hit_id: str
    hit_type_id: str
    account: Account
    question: str
    url: str
    created: datetime
    expiration: datetime
    max_assignments: int
    annotation: str | None
    assignments: list[str] = field(default_factory=list)


@dataclass
class Account:
    """One requester account on the live site or the sandbox."""

    key_id: str
    sandbox: bool
    balance: str
    hit_types: dict[str, dict[str, Any]] = field(default_factory=dict)
    hits: dict[str, FakeHIT] = field(default_factory=dict)
    bonuses: list[dict[str, Any]] = field(default_factory=list)
    blocks: dict[str, str] = field(default_factory=dict)
    qualification_types: dict[str, dict[str, Any]] = field(default_factory=dict)
    scores: dict[tuple[str, str], int] = field(default_factory=dict)
    tokens: set[str] = field(default_factory=set)
    messages: list[dict[str, Any]] = field(default_factory=list)  # NotifyWorkers, per worker

    def qualification_type_named(self, name: str) -> str | None:
        return next((i for i, t in self.qualification_types.items() if t["Name"] == name), None)


@dataclass
class _Fault:
    error: str  # "timeout", "connection", or an MTurk error code
    after: bool  # after the call took effect (its answer is lost)


class FakeMTurk:
    """MTurk's requester API in memory (see the module doc)."""

    def __init__(self, accounts: Mapping[str, str] | None = None, *, require_https: bool = True,
                 balance: str = "10000.00") -> None:
        self.allowed = dict(accounts or {})  # access key id -> secret access key
        self.require_https = require_https
        self.balance = balance
        self.calls: list[tuple[str, dict[str, Any]]] = []  # (operation, request) of each call
        self._accounts: dict[tuple[str, bool], Account] = {}
        self._hits: dict[str, FakeHIT] = {}
        self._assignments: dict[str, FakeAssignment] = {}
        self._faults: dict[str, list[_Fault]] = {}
        self._lock = threading.RLock()

    # -- wiring ---------------------------------------------------------------------------

    @contextlib.contextmanager
    def installed(self) -> Iterator[FakeMTurk]:
        """Make every MTurk client of this process a client of this fake."""
        previous = use_client_factory(self.client)
        try:
            yield self
        finally:
            use_client_factory(previous)

    def client(self, profile: str, sandbox: bool) -> Any:
        """A real boto3 MTurk client on `profile` whose calls this fake answers."""
        boto3 = require_boto3()
        session = boto3.Session(profile_name=profile)
        credentials = session.get_credentials()
        key = credentials.access_key if credentials else ""
        secret = credentials.secret_key if credentials else ""
        client = session.client("mturk", region_name=REGION,
                                endpoint_url=SANDBOX_ENDPOINT if sandbox else None)
        client.meta.events.register("before-call.mturk", partial(self._answer, key, secret,
                                                                 sandbox))
        return client

    def fail_next(self, operation: str, *, after: bool = False, error: str = "timeout") -> None:
        """The next call of `operation` (e.g. "SendBonus") fails: with a read timeout
        ("timeout"), a refused connection ("connection") or an MTurk error code (e.g.
        "ServiceFault"); before it takes effect, or `after` it did (the answer is lost)."""
        with self._lock:
            self._faults.setdefault(operation, []).append(_Fault(error, after))

    def _answer(self, key: str, secret: str, sandbox: bool, model: Any, params: Any,
                **_: Any) -> tuple[Any, dict[str, Any]]:
        from botocore.awsrequest import AWSResponse
        from botocore.validate import validate_parameters

        operation = model.name
        body = params.get("body") or b"{}"
        request = json.loads(body) if body else {}
        _check_strictly(model.input_shape, request, "")
        url = params.get("url", "")
        with self._lock:
            self.calls.append((operation, request))
            faults = self._faults.get(operation)
            fault = faults.pop(0) if faults else None
            if fault is not None and not fault.after:
                return self._fault(fault, url)
            try:
                account = self._account(key, secret, sandbox)
                handler = getattr(self, "_op_" + _snake(operation), None)
                if handler is None:
                    raise NotImplementedError(f"FakeMTurk does not implement {operation}")
                parsed: dict[str, Any] = handler(account, request)
            except _Refused as refused:
                return self._error(refused, url)
            if fault is not None:
                return self._fault(fault, url)
        if model.output_shape is not None:
            validate_parameters(parsed, model.output_shape)
        else:
            assert not parsed, f"{operation} answers nothing"
        parsed["ResponseMetadata"] = {"RequestId": str(uuid.uuid4()), "HTTPStatusCode": 200,
                                      "HTTPHeaders": {}, "RetryAttempts": 0}
        return AWSResponse(url, 200, {}, None), parsed

    def _fault(self, fault: _Fault, url: str) -> tuple[Any, dict[str, Any]]:
        from botocore import exceptions as bx

        if fault.error == "timeout":
            raise bx.ReadTimeoutError(endpoint_url=url)
        if fault.error == "connection":
            raise bx.EndpointConnectionError(endpoint_url=url)
        return self._error(_Refused(fault.error, "We encountered an unexpected error.", 500), url)

    def _error(self, refused: _Refused, url: str) -> tuple[Any, dict[str, Any]]:
        from botocore.awsrequest import AWSResponse

        parsed = {"Error": {"Code": refused.code, "Message": refused.message},
                  "ResponseMetadata": {"RequestId": str(uuid.uuid4()),
                                       "HTTPStatusCode": refused.status, "HTTPHeaders": {},
                                       "RetryAttempts": 0}}
        return AWSResponse(url, refused.status, {}, None), parsed

    def _account(self, key: str, secret: str, sandbox: bool) -> Account:
        if key not in self.allowed:
            raise _Refused("UnrecognizedClientException",
                           "The security token included in the request is invalid.")
        if self.allowed[key] != secret:
            raise _Refused("InvalidSignatureException",
                           "The request signature we calculated does not match the signature "
                           "you provided. Check your AWS Secret Access Key and signing method.")
        account = self._accounts.get((key, sandbox))
        if account is None:
            account = self._accounts[(key, sandbox)] = Account(key, sandbox, self.balance)
        return account

    # -- what tests read ----------------------------------------------------------------

    def account(self, key_id: str | None = None, sandbox: bool | None = None) -> Account:
        """The account of `key_id` (default: the only one used) on the live site or the
        sandbox (default: whichever was used)."""
        with self._lock:
            found = [a for (k, s), a in self._accounts.items()
                     if (key_id is None or k == key_id) and (sandbox is None or s == sandbox)]
            if len(found) != 1:
                raise LookupError(f"{len(found)} fake MTurk accounts match {key_id}, {sandbox}")
            return found[0]

    def hit(self, hit_id: str) -> FakeHIT:
        return self._hits[hit_id]

    def assignment(self, assignment_id: str) -> FakeAssignment:
        return self._assignments[assignment_id]

    def hit_status(self, hit_id: str) -> str:
        with self._lock:
            return str(self._hit_view(self._hits[hit_id])["HITStatus"])

    def assignable_hits(self, account: Account | None = None) -> list[str]:
        """HITs a worker could accept now."""
        with self._lock:
            hits = (account.hits if account else self._hits).values()
            return [h.hit_id for h in hits if self._hit_view(h)["HITStatus"] == "Assignable"]

    def score(self, account: Account, qualification_name: str, worker_id: str) -> int | None:
        type_id = account.qualification_type_named(qualification_name)
        return None if type_id is None else account.scores.get((type_id, worker_id))

    # -- what workers do ------------------------------------------------------------------

    def accept(self, hit_id: str, worker_id: str) -> str:
        """`worker_id` accepts the HIT: returns the new assignment's id."""
        with self._lock:
            hit = self._hits[hit_id]
            account = hit.account
            if self._hit_view(hit)["HITStatus"] != "Assignable":
                raise FakeMTurkError(f"HIT {hit_id} is not assignable")
            if worker_id in account.blocks:
                raise FakeMTurkError(f"worker {worker_id} is blocked by this requester")
            requirements = account.hit_types[hit.hit_type_id].get("QualificationRequirements", [])
            for requirement in requirements:
                if not self._meets(account, worker_id, requirement):
                    raise FakeMTurkError(f"worker {worker_id} does not meet {requirement}")
            if any(self._assignments[a].worker_id == worker_id and
                   self._assignments[a].status != "Returned" for a in hit.assignments):
                raise FakeMTurkError(f"worker {worker_id} already works on HIT {hit_id}")
            assignment = FakeAssignment(_new_id(), hit_id, worker_id, _now())
            self._assignments[assignment.assignment_id] = assignment
            hit.assignments.append(assignment.assignment_id)
            return assignment.assignment_id

    def page_url(self, assignment_id: str) -> str:
        """The URL MTurk opens for the worker: the ExternalURL plus MTurk's parameters."""
        assignment = self._assignments[assignment_id]
        hit = self._hits[assignment.hit_id]
        submit_to = ("https://workersandbox.mturk.com" if hit.account.sandbox
                     else "https://www.mturk.com")
        query = urlencode({"assignmentId": assignment_id, "hitId": hit.hit_id,
                           "turkSubmitTo": submit_to, "workerId": assignment.worker_id})
        return f"{hit.url}{'&' if '?' in hit.url else '?'}{query}"

    def submit(self, form: Mapping[str, str]) -> None:
        """The page posts MTurk's external submit form (what the shim's form sends)."""
        with self._lock:
            assignment = self._assignments.get(str(form.get("assignmentId")))
            if assignment is None:
                raise FakeMTurkError("externalSubmit without a known assignmentId")
            if len([k for k in form if k != "assignmentId"]) < 1:
                raise FakeMTurkError("HIT was not submitted correctly: no answer field")
            if assignment.status != "Accepted":
                raise FakeMTurkError(f"assignment {assignment.assignment_id} is "
                                     f"{assignment.status}")
            assignment.status = "Submitted"
            assignment.submit_time = _now()
            assignment.answer = {k: str(v) for k, v in form.items()}

    def return_hit(self, assignment_id: str) -> None:
        with self._lock:
            assignment = self._assignments[assignment_id]
            if assignment.status != "Accepted":
                raise FakeMTurkError(f"assignment {assignment_id} is {assignment.status}")
            assignment.status = "Returned"

    def _meets(self, account: Account, worker_id: str, requirement: Mapping[str, Any]) -> bool:
        type_id = requirement["QualificationTypeId"]
        if _SYSTEM_QUALIFICATION.fullmatch(type_id):
            return True  # locale, approval rate...: every fake worker qualifies
        score = account.scores.get((type_id, worker_id))
        comparator, values = requirement["Comparator"], requirement.get("IntegerValues", [])
        if comparator == "Exists":
            return score is not None
        if comparator == "DoesNotExist":
            return score is None
        if score is None:
            return False
        checks = {"LessThan": score < values[0], "LessThanOrEqualTo": score <= values[0],
                  "GreaterThan": score > values[0], "GreaterThanOrEqualTo": score >= values[0],
                  "EqualTo": score == values[0], "NotEqualTo": score != values[0],
                  "In": score in values, "NotIn": score not in values} if values else {}
        return bool(checks.get(comparator, False))

    # -- views ----------------------------------------------------------------------------

    def _hit_view(self, hit: FakeHIT) -> dict[str, Any]:
        hit_type = hit.account.hit_types[hit.hit_type_id]
        held = [self._assignments[a] for a in hit.assignments]
        active = [a for a in held if a.status != "Returned"]
        pending = sum(a.status == "Accepted" for a in active)
        completed = sum(a.status in ("Approved", "Rejected") for a in active)
        available = 0 if _now() >= hit.expiration else hit.max_assignments - len(active)
        status = "Assignable" if available > 0 else "Unassignable" if pending else "Reviewable"
        view = {
            "HITId": hit.hit_id, "HITTypeId": hit.hit_type_id, "HITGroupId": hit.hit_type_id,
            "CreationTime": hit.created, "Title": hit_type["Title"],
            "Description": hit_type["Description"], "Question": hit.question,
            "Keywords": hit_type.get("Keywords", ""), "HITStatus": status,
            "MaxAssignments": hit.max_assignments, "Reward": hit_type["Reward"],
            "AutoApprovalDelayInSeconds": hit_type.get("AutoApprovalDelayInSeconds", 2592000),
            "Expiration": hit.expiration,
            "AssignmentDurationInSeconds": hit_type["AssignmentDurationInSeconds"],
            "QualificationRequirements": hit_type.get("QualificationRequirements", []),
            "HITReviewStatus": "NotReviewed", "NumberOfAssignmentsPending": pending,
            "NumberOfAssignmentsAvailable": available, "NumberOfAssignmentsCompleted": completed,
        }
        if hit.annotation is not None:
            view["RequesterAnnotation"] = hit.annotation
        return view

    def _assignment_view(self, assignment: FakeAssignment) -> dict[str, Any]:
        hit = self._hits[assignment.hit_id]
        duration = hit.account.hit_types[hit.hit_type_id]["AssignmentDurationInSeconds"]
        view: dict[str, Any] = {
            "AssignmentId": assignment.assignment_id, "WorkerId": assignment.worker_id,
            "HITId": assignment.hit_id, "AssignmentStatus": assignment.status,
            "AcceptTime": assignment.accept_time,
            "Deadline": assignment.accept_time + timedelta(seconds=duration),
            "Answer": json.dumps(assignment.answer),
        }
        if assignment.submit_time is not None:
            view["SubmitTime"] = assignment.submit_time
        if assignment.feedback is not None:
            view["RequesterFeedback"] = assignment.feedback
        return view

    # -- operations -------------------------------------------------------------------------

    def _op_get_account_balance(self, account: Account, _: dict[str, Any]) -> dict[str, Any]:
        return {"AvailableBalance": account.balance, "OnHoldBalance": "0.00"}

    def _op_create_hit_type(self, account: Account, request: dict[str, Any]) -> dict[str, Any]:
        _in_range("AssignmentDurationInSeconds", request["AssignmentDurationInSeconds"])
        delay = request.get("AutoApprovalDelayInSeconds", 2592000)
        if not 0 <= delay <= 2592000:
            raise _Refused("RequestError", "AutoApprovalDelayInSeconds is out of range")
        if Decimal(request["Reward"]) < Decimal("0.01"):
            raise _Refused("RequestError", "The reward must be at least $0.01")
        for requirement in request.get("QualificationRequirements", []):
            self._check_requirement(account, requirement)
        digest = hashlib.sha256(json.dumps(request, sort_keys=True).encode()).hexdigest()
        type_id = "3" + digest[:29].upper()  # the same values give the same HIT type
        account.hit_types.setdefault(type_id, dict(request))
        return {"HITTypeId": type_id}

    def _check_requirement(self, account: Account, requirement: dict[str, Any]) -> None:
        type_id = requirement["QualificationTypeId"]
        if not _SYSTEM_QUALIFICATION.fullmatch(type_id) and \
                type_id not in account.qualification_types:
            raise _Refused("RequestError", f"QualificationType {type_id} does not exist.")
        has_values = bool(requirement.get("IntegerValues") or requirement.get("LocaleValues"))
        if (requirement["Comparator"] in ("Exists", "DoesNotExist")) == has_values:
            raise _Refused("RequestError", f"Comparator {requirement['Comparator']} does not fit "
                           "the values given")

    def _op_create_hit_with_hit_type(self, account: Account,
                                     request: dict[str, Any]) -> dict[str, Any]:
        if request["HITTypeId"] not in account.hit_types:
            raise _Refused("RequestError", f"Hit type {request['HITTypeId']} does not exist.")
        _in_range("LifetimeInSeconds", request["LifetimeInSeconds"])
        url = self._external_url(str(request.get("Question", "")))
        self._use_token(account, request.get("UniqueRequestToken"))
        now = _now()
        hit = FakeHIT(_new_id(), request["HITTypeId"], account, request["Question"], url, now,
                      now + timedelta(seconds=request["LifetimeInSeconds"]),
                      int(request.get("MaxAssignments", 1)), request.get("RequesterAnnotation"))
        account.hits[hit.hit_id] = self._hits[hit.hit_id] = hit
        return {"HIT": self._hit_view(hit)}

    def _external_url(self, question: str) -> str:
        try:
            root = ET.fromstring(question)
        except ET.ParseError as exc:
            raise _Refused("ParameterValidationError", f"Question is not XML: {exc}") from None
        if root.tag != f"{{{_QUESTION_NS}}}ExternalQuestion":
            raise _Refused("ParameterValidationError", "Question is no ExternalQuestion")
        url = root.findtext(f"{{{_QUESTION_NS}}}ExternalURL") or ""
        height = root.findtext(f"{{{_QUESTION_NS}}}FrameHeight")
        if height is None or not height.isdigit():
            raise _Refused("ParameterValidationError", "FrameHeight must be a number")
        if not url.startswith("https://" if self.require_https else ("https://", "http://")):
            raise _Refused("ParameterValidationError",
                           f"ExternalURL must be an HTTPS URL, got {url!r}")
        return url

    def _use_token(self, account: Account, token: str | None) -> None:
        if token is None:
            return
        if token in account.tokens:
            raise _Refused("RequestError", f'The idempotency token "{token}" has already been '
                           f"processed. ({int(_now().timestamp() * 1000)})")
        account.tokens.add(token)

    def _own_hit(self, account: Account, hit_id: str) -> FakeHIT:
        hit = account.hits.get(hit_id)
        if hit is None:
            raise _Refused("RequestError", f"Hit {hit_id} does not exist. "
                           f"({int(_now().timestamp() * 1000)})")
        return hit

    def _op_get_hit(self, account: Account, request: dict[str, Any]) -> dict[str, Any]:
        return {"HIT": self._hit_view(self._own_hit(account, request["HITId"]))}

    def _op_update_expiration_for_hit(self, account: Account,
                                      request: dict[str, Any]) -> dict[str, Any]:
        hit = self._own_hit(account, request["HITId"])
        hit.expiration = datetime.fromtimestamp(float(request["ExpireAt"]), UTC)
        return {}

    def _op_list_hits(self, account: Account, request: dict[str, Any]) -> dict[str, Any]:
        hits = sorted(account.hits.values(), key=lambda h: h.created)
        page, next_token = _page(hits, request)
        return {"NumResults": len(page), "HITs": [self._hit_view(h) for h in page],
                **next_token}

    def _own_assignment(self, account: Account, assignment_id: str) -> FakeAssignment:
        assignment = self._assignments.get(assignment_id)
        if assignment is None or self._hits[assignment.hit_id].account is not account:
            raise _Refused("RequestError", f"Assignment {assignment_id} does not exist. "
                           f"({int(_now().timestamp() * 1000)})")
        return assignment

    def _op_get_assignment(self, account: Account, request: dict[str, Any]) -> dict[str, Any]:
        assignment = self._own_assignment(account, request["AssignmentId"])
        if assignment.status in ("Accepted", "Returned"):  # MTurk lists submitted work only
            raise _Refused("RequestError", f"Assignment {assignment.assignment_id} has not "
                           "been submitted.")
        return {"Assignment": self._assignment_view(assignment),
                "HIT": self._hit_view(self._hits[assignment.hit_id])}

    def _op_approve_assignment(self, account: Account, request: dict[str, Any]) -> dict[str, Any]:
        assignment = self._own_assignment(account, request["AssignmentId"])
        allowed = ["Submitted"] + (["Rejected"] if request.get("OverrideRejection") else [])
        if assignment.status not in allowed:
            raise _Refused("RequestError", "This operation can be called with a status of: "
                           f"{', '.join(allowed)} ({int(_now().timestamp() * 1000)})")
        assignment.status = "Approved"
        assignment.feedback = request.get("RequesterFeedback")
        return {}

    def _op_reject_assignment(self, account: Account, request: dict[str, Any]) -> dict[str, Any]:
        assignment = self._own_assignment(account, request["AssignmentId"])
        if assignment.status != "Submitted":
            raise _Refused("RequestError", "This operation can be called with a status of: "
                           f"Submitted ({int(_now().timestamp() * 1000)})")
        if not request["RequesterFeedback"].strip():
            raise _Refused("RequestError", "RequesterFeedback is required to reject")
        assignment.status = "Rejected"
        assignment.feedback = request["RequesterFeedback"]
        return {}

    def _op_send_bonus(self, account: Account, request: dict[str, Any]) -> dict[str, Any]:
        assignment = self._own_assignment(account, request["AssignmentId"])
        if assignment.worker_id != request["WorkerId"]:
            raise _Refused("RequestError", f"Assignment {assignment.assignment_id} was not done "
                           f"by worker {request['WorkerId']}")
        try:
            amount = Decimal(request["BonusAmount"])
        except InvalidOperation:
            raise _Refused("RequestError", "BonusAmount is not an amount") from None
        if amount <= 0 or not request["Reason"].strip():
            raise _Refused("RequestError", "A bonus needs a positive amount and a reason")
        self._use_token(account, request.get("UniqueRequestToken"))
        account.bonuses.append({"WorkerId": request["WorkerId"],
                                "BonusAmount": request["BonusAmount"],
                                "AssignmentId": assignment.assignment_id,
                                "Reason": request["Reason"], "GrantTime": _now()})
        return {}

    def _op_list_bonus_payments(self, account: Account, request: dict[str, Any]) -> dict[str, Any]:
        hit_id, assignment_id = request.get("HITId"), request.get("AssignmentId")
        found = [b for b in account.bonuses
                 if (assignment_id is None or b["AssignmentId"] == assignment_id) and
                 (hit_id is None or self._assignments[b["AssignmentId"]].hit_id == hit_id)]
        page, next_token = _page(found, request)
        return {"NumResults": len(page), "BonusPayments": page, **next_token}

    def _op_notify_workers(self, account: Account, request: dict[str, Any]) -> dict[str, Any]:
        subject, text = request["Subject"], request["MessageText"]
        if not subject.strip() or not text.strip():
            raise _Refused("RequestError", "A notification needs a subject and a message")
        if len(subject) > 200 or len(text) > 4096:
            raise _Refused("RequestError", "Subject is at most 200 characters, MessageText "
                           "at most 4096")
        if not 1 <= len(request["WorkerIds"]) <= 100:
            raise _Refused("RequestError", "WorkerIds lists 1 to 100 workers")
        worked_here = {a.worker_id for a in self._assignments.values()
                       if self._hits[a.hit_id].account is account}
        failures = []
        for worker_id in request["WorkerIds"]:
            if worker_id in worked_here:
                account.messages.append({"WorkerId": worker_id, "Subject": subject,
                                         "MessageText": text})
            else:  # MTurk only lets requesters write to workers who worked for them
                failures.append({"NotifyWorkersFailureCode": "HardFailure",
                                 "NotifyWorkersFailureMessage": "Cannot send notification "
                                 "because you have never paid this worker.",
                                 "WorkerId": worker_id})
        return {"NotifyWorkersFailureStatuses": failures}

    def _op_create_worker_block(self, account: Account, request: dict[str, Any]) -> dict[str, Any]:
        if not request["Reason"].strip():
            raise _Refused("RequestError", "A block needs a reason")
        account.blocks[request["WorkerId"]] = request["Reason"]
        return {}

    def _op_delete_worker_block(self, account: Account, request: dict[str, Any]) -> dict[str, Any]:
        account.blocks.pop(request["WorkerId"], None)
        return {}

    def _op_list_worker_blocks(self, account: Account, request: dict[str, Any]) -> dict[str, Any]:
        blocks = [{"WorkerId": w, "Reason": r} for w, r in sorted(account.blocks.items())]
        page, next_token = _page(blocks, request)
        return {"NumResults": len(page), "WorkerBlocks": page, **next_token}

    def _op_create_qualification_type(self, account: Account,
                                      request: dict[str, Any]) -> dict[str, Any]:
        if account.qualification_type_named(request["Name"]) is not None:
            raise _Refused("RequestError", "You have already created a QualificationType with "
                           "this name. A QualificationType's name must be unique among all of "
                           "the QualificationTypes created by the same user. "
                           f"({int(_now().timestamp() * 1000)})")
        type_id = "3" + _new_id(29)
        account.qualification_types[type_id] = {
            "QualificationTypeId": type_id, "CreationTime": _now(), "Name": request["Name"],
            "Description": request["Description"],
            "QualificationTypeStatus": request["QualificationTypeStatus"], "IsRequestable": True,
            "AutoGranted": bool(request.get("AutoGranted", False)),
        }
        return {"QualificationType": dict(account.qualification_types[type_id])}

    def _op_list_qualification_types(self, account: Account,
                                     request: dict[str, Any]) -> dict[str, Any]:
        query = (request.get("Query") or "").lower()
        found = [dict(t) for t in account.qualification_types.values()
                 if query in t["Name"].lower() or query in t["Description"].lower()]
        page, next_token = _page(found, request)
        return {"NumResults": len(page), "QualificationTypes": page, **next_token}

    def _own_type(self, account: Account, type_id: str) -> str:
        if type_id not in account.qualification_types:
            raise _Refused("RequestError", f"QualificationType {type_id} does not exist or is "
                           "not yours.")
        return type_id

    def _op_associate_qualification_with_worker(self, account: Account,
                                                request: dict[str, Any]) -> dict[str, Any]:
        type_id = self._own_type(account, request["QualificationTypeId"])
        account.scores[(type_id, request["WorkerId"])] = int(request.get("IntegerValue", 1))
        return {}

    def _op_disassociate_qualification_from_worker(self, account: Account,
                                                   request: dict[str, Any]) -> dict[str, Any]:
        type_id = self._own_type(account, request["QualificationTypeId"])
        account.scores.pop((type_id, request["WorkerId"]), None)
        return {}

    def _op_get_qualification_score(self, account: Account,
                                    request: dict[str, Any]) -> dict[str, Any]:
        type_id = self._own_type(account, request["QualificationTypeId"])
        score = account.scores.get((type_id, request["WorkerId"]))
        if score is None:
            raise _Refused("RequestError", "You requested a Qualification that does not exist.")
        return {"Qualification": {"QualificationTypeId": type_id,
                                  "WorkerId": request["WorkerId"], "IntegerValue": score,
                                  "Status": "Granted"}}


class MTurkSimulatedWorker(SimulatedWorker):
    """A worker's tab on an MTurk HIT: the requests the MTurk shim makes the page send."""

    def __init__(self, fake: FakeMTurk, assignment_id: str, **kwargs: Any) -> None:
        assignment = fake.assignment(assignment_id)
        super().__init__(fake.hit(assignment.hit_id).url, assignment.worker_id, assignment_id,
                         **kwargs)
        self.hit_id = assignment.hit_id

    def provider_params(self) -> dict[str, str]:
        return {"workerId": self.worker_id, "assignmentId": str(self.assignment_id)}

    def agent_registration(self) -> dict[str, Any]:
        return {"worker_name": self.worker_id, "assignment_id": self.assignment_id,
                "hit_id": self.hit_id,
                "agent_registration_id": f"{self.assignment_id}-{self.worker_id}",
                "provider_type": "mturk"}


async def work_hit(fake: FakeMTurk, hit_id: str, worker_id: str, answer: Any) -> str:
    """A worker accepts the HIT, does the unit the task server gives them, then their
    page submits the assignment to MTurk as the shim does. Returns the assignment id."""
    assignment_id = fake.accept(hit_id, worker_id)
    async with MTurkSimulatedWorker(fake, assignment_id) as worker:
        await complete_unit(worker, answer)
    fake.submit({"assignmentId": assignment_id, "workerId": worker_id,
                 "mephisto_submitted": "true"})
    return assignment_id


# -- helpers ------------------------------------------------------------------------------


def _snake(name: str) -> str:
    from botocore import xform_name

    return str(xform_name(name))  # ListHITs -> list_hits, as boto3 names its methods


def _in_range(name: str, value: int) -> None:
    if not _SECONDS[0] <= int(value) <= _SECONDS[1]:
        raise _Refused("RequestError", f"{name} must be between {_SECONDS[0]} and {_SECONDS[1]}")


def _page(items: list[Any], request: Mapping[str, Any]) -> tuple[list[Any], dict[str, str]]:
    size = int(request.get("MaxResults") or 10)
    if not 1 <= size <= 100:
        raise _Refused("ParameterValidationError", "MaxResults must be between 1 and 100")
    start = int(request.get("NextToken") or 0)
    page = items[start:start + size]
    more = start + size < len(items)
    return page, ({"NextToken": str(start + size)} if more else {})


def _check_strictly(shape: Any, value: Any, path: str) -> None:
    """What botocore leaves to the service: patterns, maximum lengths, enums, ranges."""
    from botocore.exceptions import ParamValidationError

    if shape is None:
        return
    kind = shape.type_name
    where = path or "input"
    if kind == "structure" and isinstance(value, dict):
        for name, member in shape.members.items():
            if name in value:
                _check_strictly(member, value[name], f"{path}.{name}" if path else name)
    elif kind == "list" and isinstance(value, list):
        for index, item in enumerate(value):
            _check_strictly(shape.member, item, f"{where}[{index}]")
    elif kind == "string" and isinstance(value, str):
        meta = shape.metadata
        if "pattern" in meta and not re.search(meta["pattern"], value):
            raise ParamValidationError(report=f"{where}: {value!r} does not match "
                                              f"{meta['pattern']}")
        if "max" in meta and len(value) > meta["max"]:
            raise ParamValidationError(report=f"{where}: longer than {meta['max']}")
        if "min" in meta and len(value) < meta["min"]:
            raise ParamValidationError(report=f"{where}: shorter than {meta['min']}")
        if shape.enum and value not in shape.enum:
            raise ParamValidationError(report=f"{where}: {value!r} is not one of {shape.enum}")
    elif kind in ("integer", "long") and isinstance(value, int):
        meta = shape.metadata
        if ("min" in meta and value < meta["min"]) or ("max" in meta and value > meta["max"]):
            raise ParamValidationError(report=f"{where}: {value} is out of range")
