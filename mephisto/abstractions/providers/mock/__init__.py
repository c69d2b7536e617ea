"""`mock`: a crowd provider with no crowd. Identity comes from the task URL
(`?worker_id=...&assignment_id=...`); the requester is created on first use; what a real
provider would be asked (publishing, reviews, bonuses, blocks, qualifications, messages) is
recorded in the mock's own records. For local testing and demos.

A package only so that Mephisto's paths `mock.mock_provider` and `mock.provider_type`
(thin re-exports) can sit beside it; the plugin is this module."""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mephisto.abstractions.crowd_provider import (
    Capability,
    CrowdProvider,
    ProviderArgs,
    RequesterCheck,
)
from mephisto.abstractions.providers import published
from mephisto.data_model.requester import Requester
from mephisto.errors import EntryAlreadyExists, MalformedRequest, ProviderError

if TYPE_CHECKING:
    from mephisto.data_model.agent import Agent
    from mephisto.data_model.payment import Payment
    from mephisto.data_model.task_run import TaskRun
    from mephisto.data_model.unit import Unit
    from mephisto.data_model.worker import Worker
    from mephisto.db.database import MephistoDB

PROVIDER_TYPE = "mock"
_SHIM = Path(__file__).with_name("mock_wrap_crowd_source.js")
MAX_WORKER_NAME = 200


@dataclass
class MockProviderArgs(ProviderArgs):
    _provider_type: str = PROVIDER_TYPE
    requester_name: str = field(
        default="MOCK_REQUESTER", metadata={"help": "Name of the mock requester to launch as."}
    )


class MockProvider(CrowdProvider):
    """Everything a real provider does, recorded in its own records instead of sent: the
    units it published, its review decisions, bonuses, blocks and qualifications (so
    tests and the review tools can see what the provider was asked)."""

    PROVIDER_TYPE = PROVIDER_TYPE
    ArgsClass = MockProviderArgs
    CAPABILITIES = frozenset(Capability)

    def _put(self, kind: str, key: str, value: Any) -> None:
        self.db.put_provider_record(PROVIDER_TYPE, kind, key, value)

    # -- requesters ---------------------------------------------------------------------

    @classmethod
    def register_requester(
        cls, db: MephistoDB, requester_name: str, credentials: Mapping[str, str]
    ) -> Requester:
        if credentials:
            raise ProviderError(PROVIDER_TYPE, "the mock provider takes no credentials; got "
                                + ", ".join(sorted(credentials)))
        return _find_or_create_requester(db, requester_name)

    def get_requester(self, db: MephistoDB, args: Any) -> Requester:
        name = str(args.provider.get("requester_name") or "MOCK_REQUESTER")
        return _find_or_create_requester(db, name)

    def check_requester(self, requester: Requester) -> RequesterCheck:
        return RequesterCheck(True, "ready (the mock provider needs no account)", balance=0.0)

    # -- a task run's work ------------------------------------------------------------------

    def launch_units(self, units: list[Any], server_url: str) -> None:
        """Nothing to publish: workers open the server URL directly. Recorded as open."""
        published.record_units(self.db, PROVIDER_TYPE, "launched", (u.unit_id for u in units))

    def expire_units(self, units: list[Any]) -> None:
        published.record_units(self.db, PROVIDER_TYPE, "expired", (u.unit_id for u in units))

    def open_units(self, task_run: TaskRun) -> list[str]:
        return published.open_unit_ids(self.db, PROVIDER_TYPE, task_run.db_id)

    # -- workers arriving -----------------------------------------------------------------

    def worker_name_from_registration(self, provider_data: dict[str, Any]) -> str:
        name = provider_data.get("worker_name")
        if not isinstance(name, str) or not name.strip():
            raise MalformedRequest("provider_data.worker_name must be a non-empty string")
        if len(name) > MAX_WORKER_NAME:
            raise MalformedRequest(f"provider_data.worker_name is longer than {MAX_WORKER_NAME}")
        return name

    def worker_name_from_request(self, caller: Mapping[str, str]) -> str | None:
        """The shim's `getProviderURLParams` sends `?worker_id=<name>` on every request."""
        return caller.get("worker_id") or None

    def wrap_crowd_source_js(self) -> str:
        return _SHIM.read_text()

    # -- review ---------------------------------------------------------------------------

    def _decide(self, agent: Agent, decision: str, note: str | None) -> None:
        self._put("review", agent.db_id, {"decision": decision, "note": note})

    def approve_work(self, agent: Agent, review_note: str | None = None) -> None:
        self._decide(agent, "approved", review_note)

    def reject_work(self, agent: Agent, reason: str) -> None:
        self._decide(agent, "rejected", reason)

    def soft_reject_work(self, agent: Agent, review_note: str | None = None) -> None:
        self._decide(agent, "soft_rejected", review_note)

    def pay_bonus(self, payment: Payment) -> str:
        # paid once per token, in one statement (a retry finds the first payment's record)
        paid = self.db.add_provider_record(PROVIDER_TYPE, "bonus", payment.request_token, {
            "ref": f"mock-bonus-{payment.db_id}", "worker_id": payment.worker_id,
            "amount": payment.amount, "reason": payment.reason,
        })
        return str(paid["ref"])

    def block_worker(self, worker: Worker, requester: Requester, reason: str) -> None:
        self._put("block", f"{requester.db_id}:{worker.db_id}", {"reason": reason})

    def unblock_worker(self, worker: Worker, requester: Requester) -> None:
        self.db.delete_provider_record(PROVIDER_TYPE, "block", f"{requester.db_id}:{worker.db_id}")

    def grant_qualification(self, worker: Worker, qualification_name: str, value: int) -> None:
        self._put("qualification", f"{worker.db_id}:{qualification_name}", {"value": value})

    def revoke_qualification(self, worker: Worker, qualification_name: str) -> None:
        self.db.delete_provider_record(PROVIDER_TYPE, "qualification",
                                       f"{worker.db_id}:{qualification_name}")

    def send_feedback_message(self, worker: Worker, unit: Unit, text: str) -> None:
        if not text.strip():
            raise ProviderError(PROVIDER_TYPE, "a message to a worker needs a text")
        self._put("message", f"{worker.db_id}:{unit.db_id}:{secrets.token_hex(4)}",
                  {"worker_id": worker.db_id, "unit_id": unit.db_id, "text": text})


def _find_or_create_requester(db: MephistoDB, name: str) -> Requester:
    found = db.find_requesters(requester_name=name)
    if found:
        return found[0]
    try:
        return Requester(db, db.new_requester(name, PROVIDER_TYPE))
    except EntryAlreadyExists:
        return db.find_requesters(requester_name=name)[0]
