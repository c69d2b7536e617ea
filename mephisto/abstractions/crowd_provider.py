"""The crowd provider contract: who the workers are, how work reaches them, how they are
paid.

A provider declares `PROVIDER_TYPE` and an `ArgsClass` (dataclass, the
`mephisto.provider.*` config). It acts on the plain data-model entities and keeps what
it needs in its own records (`db.put_provider_record(PROVIDER_TYPE, kind, key, value)`):
HITs of units, studies of runs, ... Credentials never go to the database or the logs:
each provider keeps them where its service does (the AWS profile for MTurk, a file of
the user's or an environment variable for Prolific). Calls that reach a remote API may
block: the operations layer runs them in a thread pool. A call the provider refuses or
fails raises `ProviderError`, naming the provider and what to do. Methods take lists
where a run would otherwise call once per unit.

To implement one, override:

- requesters: `register_requester(db, name, credentials)` (classmethod: store the
  credentials where the service keeps them and create the requester),
  `get_requester(db, args)`, `check_requester(requester)` (credentials work? balance?);
- a task run's work: `setup_resources_for_task_run(...)`,
  `cleanup_resources_from_task_run(...)`, `launch_units(units, url)` (idempotent per
  unit: a failed launch is retried), `expire_units(units)`, `open_units(task_run)`
  (what is still open on the provider: found again after a crash);
- workers arriving: `worker_name_from_registration(provider_data)` and
  `assignment_from_registration(provider_data)` (the provider's ids of the worker and of
  their assignment, from a `/request_agent` body), `worker_name_from_request(caller)`
  (the worker a request's query names), `wrap_crowd_source_js()` (the page shim: it
  registers the worker and submits back to the provider, e.g. MTurk's form);
- review: `approve_work`, `reject_work` (with a reason), `soft_reject_work`,
  `pay_bonus(payment)` (idempotent by `payment.request_token`), `block_worker`,
  `unblock_worker` (per requester), `grant_qualification`, `revoke_qualification`
  (mirrored where the provider can filter on them), `send_feedback_message(worker, unit,
  text)` (a reviewer's note, through the provider's messages).

`CAPABILITIES` says which optional parts a provider has (`Capability`); the contract
suite (`mephisto.testing.provider_contract`) checks each one it declares, and that the
others raise `ProviderError` instead of pretending.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any, ClassVar

from mephisto.errors import ProviderError

if TYPE_CHECKING:
    from mephisto.data_model.agent import Agent
    from mephisto.data_model.payment import Payment
    from mephisto.data_model.requester import Requester
    from mephisto.data_model.task_run import TaskRun
    from mephisto.data_model.unit import Unit
    from mephisto.data_model.worker import Worker
    from mephisto.db.database import MephistoDB


class Capability(StrEnum):
    BALANCE = "balance"  # check_requester reports the account's balance
    BONUS = "bonus"  # pay_bonus
    BLOCK = "block"  # block_worker / unblock_worker reach the provider
    QUALIFICATIONS = "qualifications"  # grants are mirrored on the provider
    SOFT_REJECT = "soft_reject"  # a soft rejection is its own decision on the provider
    MESSAGES = "messages"  # send_feedback_message reaches the worker


@dataclass(frozen=True)
class RequesterCheck:
    """What `check_requester` found: `ready` to launch, the `balance` where the provider
    reports one, and a `message` saying what is wrong and what to do (or that all is
    well)."""

    ready: bool
    message: str
    balance: float | None = None


@dataclass
class ProviderArgs:
    """Arguments every provider takes (`mephisto.provider.*`)."""

    _provider_type: str = "???"
    requester_name: str = field(default="???", metadata={"help": "Requester to launch as."})


class CrowdProvider:
    PROVIDER_TYPE: ClassVar[str | None] = None
    ArgsClass: ClassVar[type[Any]] = ProviderArgs
    CAPABILITIES: ClassVar[frozenset[Capability]] = frozenset()
    # What the provider charges on top of every reward and bonus, as a fraction (MTurk's
    # 20% commission: 0.2). Budgets and cost previews count it.
    FEE_RATE: ClassVar[float] = 0.0

    def __init__(self, db: MephistoDB, args: Any = None) -> None:
        self.db = db
        self.args = args

    @classmethod
    def assert_task_args(cls, args: Any, shared_state: Any) -> None:
        """Raise `ConfigError` for provider configuration that cannot work."""

    def _unsupported(self, what: str) -> ProviderError:
        return ProviderError(str(self.PROVIDER_TYPE), f"{what} is not supported here")

    # -- requesters ---------------------------------------------------------------------

    @classmethod
    def register_requester(
        cls, db: MephistoDB, requester_name: str, credentials: Mapping[str, str]
    ) -> Requester:
        """Create (or find) the requester and store its credentials where the service
        keeps them. Raises `ProviderError` for missing or malformed credentials."""
        raise NotImplementedError

    def get_requester(self, db: MephistoDB, args: Any) -> Requester:
        raise NotImplementedError

    def check_requester(self, requester: Requester) -> RequesterCheck:
        """Whether this requester can launch (credentials found and accepted)."""
        raise NotImplementedError

    # -- a task run's work ------------------------------------------------------------------

    def setup_resources_for_task_run(
        self, task_run: TaskRun, args: Any, shared_state: Any, server_url: str
    ) -> None:
        """Prepare provider-side resources (e.g. qualifications, HIT types)."""

    def cleanup_resources_from_task_run(self, task_run: TaskRun, server_url: str) -> None:
        """Release what `setup_resources_for_task_run` made."""

    def launch_units(self, units: list[Any], server_url: str) -> None:
        """Publish these units (objects with `unit_id`). Launching a unit that is
        already published changes nothing."""
        raise NotImplementedError

    def expire_units(self, units: list[Any]) -> None:
        """Withdraw these units from the provider (work in progress may still finish)."""
        raise NotImplementedError

    def open_units(self, task_run: TaskRun) -> list[str]:
        """Ids of this run's units still open on the provider."""
        raise NotImplementedError

    # -- workers arriving -----------------------------------------------------------------

    def worker_name_from_registration(self, provider_data: dict[str, Any]) -> str:
        """The provider's id of the worker in a `/request_agent` body (`MalformedRequest`
        when it has none)."""
        raise NotImplementedError

    def assignment_from_registration(self, provider_data: dict[str, Any]) -> str | None:
        """The provider's id of the worker's assignment in a `/request_agent` body."""
        value = provider_data.get("assignment_id")
        return value if isinstance(value, str) and value else None

    def worker_name_from_request(self, caller: Mapping[str, str]) -> str | None:
        """The worker a request says it comes from (None: it names none)."""
        return None

    def wrap_crowd_source_js(self) -> str:
        raise NotImplementedError

    # -- review ---------------------------------------------------------------------------

    def approve_work(self, agent: Agent, review_note: str | None = None) -> None:
        """Approve (and so pay the unit's reward) on the provider."""

    def reject_work(self, agent: Agent, reason: str) -> None:
        """Reject on the provider; `reason` is shown to the worker."""

    def soft_reject_work(self, agent: Agent, review_note: str | None = None) -> None:
        """Pay, but record the work as unusable (providers without the notion approve)."""
        self.approve_work(agent, review_note)

    def pay_bonus(self, payment: Payment) -> str:
        """Send a recorded payment; return the provider's reference for it. Called again
        for the same payment (a retry), it must not pay twice."""
        raise self._unsupported("paying bonuses")

    def block_worker(self, worker: Worker, requester: Requester, reason: str) -> None:
        """Block the worker for this requester on the provider."""
        raise self._unsupported("blocking workers")

    def unblock_worker(self, worker: Worker, requester: Requester) -> None:
        raise self._unsupported("unblocking workers")

    def grant_qualification(self, worker: Worker, qualification_name: str, value: int) -> None:
        """Mirror a grant on the provider, where it can filter work on it."""
        raise self._unsupported("qualifications")

    def revoke_qualification(self, worker: Worker, qualification_name: str) -> None:
        raise self._unsupported("qualifications")

    def send_feedback_message(self, worker: Worker, unit: Unit, text: str) -> None:
        """Send `text` to the worker about their work on `unit` (a review's feedback),
        through the provider's own messages."""
        raise self._unsupported("messages to workers")
