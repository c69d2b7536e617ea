"""`mturk` and `mturk_sandbox`: Amazon Mechanical Turk as a crowd provider (boto3).

The sandbox provider is the live one with a flag: MTurk's sandbox endpoint, requesters
named `<name>_sandbox` on the AWS profile `<name>`, its own records and workers.

- requesters: `register_requester` stores the IAM keys as the AWS profile named after
  the requester (`credentials.py`); `check_requester` asks MTurk for the balance.
- a run: one HIT type (title, description, reward, keywords, assignment duration,
  qualification requirements), one HIT per unit on the task server's URL; HITs are
  interchangeable seats (`hits.py` says how units and HITs map).
- workers arrive through the page shim `wrap_crowd_source.js` with MTurk's query
  parameters; their MTurk assignment id is saved on their agent
  (`provider_assignment_id`), which approvals, rejections and bonuses use.
- review: approve, reject with feedback, soft reject = approve (MTurk has no such
  notion), bonuses with the payment's request token as `UniqueRequestToken`, blocks
  (per requester account), qualifications mirrored as MTurk qualification types.

Every MTurk failure is a `ProviderError("mturk", what happened and what to do,
retryable)`; records change only after MTurk did what they record.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from mephisto.abstractions.crowd_provider import (
    Capability,
    CrowdProvider,
    ProviderArgs,
    RequesterCheck,
)
from mephisto.abstractions.providers.mturk.client import MTurkAPI, require_boto3
from mephisto.abstractions.providers.mturk.credentials import (
    SANDBOX_SUFFIX,
    profile_for,
    read_credentials,
    write_profile,
)
from mephisto.abstractions.providers.mturk.hits import RunHITs, hit_type_params
from mephisto.abstractions.providers.mturk.qualifications import (
    QualificationTypes,
    check_requirements,
    mturk_requirements,
)
from mephisto.data_model.requester import Requester
from mephisto.errors import ConfigError, EntryAlreadyExists, MalformedRequest, ProviderError
from mephisto.utils.args import Args

if TYPE_CHECKING:
    from mephisto.data_model.agent import Agent
    from mephisto.data_model.payment import Payment
    from mephisto.data_model.task_run import TaskRun
    from mephisto.data_model.unit import Unit
    from mephisto.data_model.worker import Worker
    from mephisto.db.database import MephistoDB

logger = logging.getLogger(__name__)

__all__ = ["MTurkProvider", "MTurkProviderArgs", "SandboxMTurkProvider",
           "SandboxMTurkProviderArgs"]

PROVIDER_TYPE = "mturk"
SANDBOX_PROVIDER_TYPE = "mturk_sandbox"
PREVIEW_ASSIGNMENT = "ASSIGNMENT_ID_NOT_AVAILABLE"  # MTurk's assignmentId in a preview
_SHIM = Path(__file__).with_name("wrap_crowd_source.js")
_MAX_FEEDBACK = 1024  # MTurk's limit on RequesterFeedback
_MAX_SUBJECT, _MAX_MESSAGE = 200, 4096  # NotifyWorkers' limits
_SECONDS = (30, 365 * 24 * 3600)  # MTurk's bounds on durations and lifetimes
_DEFAULT_LIFETIME = 60 * 60 * 24 * 31  # TaskRunArgs' default


@dataclass
class MTurkProviderArgs(ProviderArgs):
    _provider_type: str = PROVIDER_TYPE
    requester_name: str = field(default="???", metadata={
        "help": "Requester to launch as (registered with `mephisto register mturk name=... "
                "access_key_id=... secret_access_key=...`)."})


@dataclass
class SandboxMTurkProviderArgs(MTurkProviderArgs):
    _provider_type: str = SANDBOX_PROVIDER_TYPE
    requester_name: str = field(default="???", metadata={
        "help": "Sandbox requester to launch as (`<name>_sandbox`, registered with "
                "`mephisto register mturk_sandbox name=... access_key_id=... "
                "secret_access_key=...`)."})


class MTurkProvider(CrowdProvider):
    """Amazon Mechanical Turk (the live site). See the module doc."""

    PROVIDER_TYPE = PROVIDER_TYPE
    ArgsClass = MTurkProviderArgs
    CAPABILITIES = frozenset({Capability.BALANCE, Capability.BONUS, Capability.BLOCK,
                              Capability.QUALIFICATIONS, Capability.MESSAGES})
    SANDBOX: ClassVar[bool] = False
    FEE_RATE = 0.2  # MTurk's commission on rewards and bonuses (HITs of fewer than 10 assignments)

    def __init__(self, db: MephistoDB, args: Any = None) -> None:
        super().__init__(db, args)
        self._apis: dict[str, MTurkAPI] = {}
        self._apis_lock = threading.Lock()
        self._expire_lock = threading.Lock()  # one expiry at a time: seats are counted
        self._task_run_id: str | None = None

    @classmethod
    def is_sandbox(cls) -> bool:
        return cls.SANDBOX

    @classmethod
    def assert_task_args(cls, args: Any, shared_state: Any) -> None:
        require_boto3(str(cls.PROVIDER_TYPE))
        task = args.get("task") or {}
        reward = task.get("task_reward")
        if isinstance(reward, int | float) and not isinstance(reward, bool) and reward < 0.01:
            raise ConfigError(f"MTurk pays at least $0.01 per HIT; task_reward is {reward}",
                              key="mephisto.task.task_reward")
        for key in ("assignment_duration_in_seconds", "task_lifetime_in_seconds"):
            value = task.get(key)
            if isinstance(value, int) and not _SECONDS[0] <= value <= _SECONDS[1]:
                raise ConfigError(f"MTurk takes {_SECONDS[0]} s to one year for {key}; got "
                                  f"{value}", key=f"mephisto.task.{key}")
        if shared_state is not None:
            check_requirements(str(cls.PROVIDER_TYPE), shared_state)

    # -- requesters ---------------------------------------------------------------------

    @classmethod
    def _requester_name(cls, name: str) -> str:
        if cls.SANDBOX and not name.endswith(SANDBOX_SUFFIX):
            return name + SANDBOX_SUFFIX
        return name

    @classmethod
    def _register_hint(cls, name: str) -> str:
        return (f"`mephisto register {cls.PROVIDER_TYPE} name={name} access_key_id=... "
                "secret_access_key=...`")

    @classmethod
    def register_requester(
        cls, db: MephistoDB, requester_name: str, credentials: Mapping[str, str]
    ) -> Requester:
        """Store the IAM keys (`access_key_id`, `secret_access_key`) as the requester's
        AWS profile and create the requester (a sandbox one is named `<name>_sandbox`).
        Registering again replaces the keys."""
        provider_type = str(cls.PROVIDER_TYPE)
        name = cls._requester_name(requester_name)
        profile = profile_for(provider_type, name, cls.SANDBOX)
        key_id, secret = read_credentials(provider_type, credentials)
        found = db.find_requesters(requester_name=name)
        if found and found[0].provider_type != provider_type:
            raise ProviderError(provider_type, (
                f"requester name {name!r} is taken by a {found[0].provider_type} requester; "
                "choose another name"))
        path = write_profile(profile, key_id, secret)
        logger.info("requester %s: AWS profile %r written to %s", name, profile, path)
        if found:
            return found[0]
        try:
            return Requester(db, db.new_requester(name, provider_type))
        except EntryAlreadyExists:
            return db.find_requesters(requester_name=name)[0]

    def get_requester(self, db: MephistoDB, args: Any) -> Requester:
        name = str(args.provider.get("requester_name") or "")
        if name in ("", "???"):
            raise ConfigError(
                f"mephisto.provider.requester_name is required: the {self.PROVIDER_TYPE} "
                "requester to launch as", key="mephisto.provider.requester_name")
        name = self._requester_name(name)
        found = db.find_requesters(requester_name=name)
        if not found:
            raise ProviderError(str(self.PROVIDER_TYPE), (
                f"no requester named {name!r}: register it with {self._register_hint(name)}"))
        if found[0].provider_type != self.PROVIDER_TYPE:
            raise ProviderError(str(self.PROVIDER_TYPE), (
                f"requester {name!r} is a {found[0].provider_type} requester; use a "
                f"{self.PROVIDER_TYPE} one"))
        return found[0]

    def check_requester(self, requester: Requester) -> RequesterCheck:
        try:
            api = self._api(requester)
            answer = api.call("get_account_balance", "reading the account balance")
        except ProviderError as exc:
            return RequesterCheck(False, str(exc))
        balance = float(answer["AvailableBalance"])
        where = "MTurk's sandbox" if self.SANDBOX else "MTurk"
        return RequesterCheck(True, f"{self.PROVIDER_TYPE}: requester {requester.requester_name} "
                              f"is ready on {where}, ${balance:.2f} available", balance=balance)

    def _api(self, requester: Requester) -> MTurkAPI:
        if requester.provider_type != self.PROVIDER_TYPE:
            raise ProviderError(str(self.PROVIDER_TYPE), (
                f"requester {requester.requester_name!r} is a {requester.provider_type} "
                "requester"))
        with self._apis_lock:
            api = self._apis.get(requester.db_id)
            if api is None:
                profile = profile_for(str(self.PROVIDER_TYPE), requester.requester_name,
                                      self.SANDBOX)
                api = self._apis[requester.db_id] = MTurkAPI(
                    str(self.PROVIDER_TYPE), requester.requester_name, profile, self.SANDBOX)
            return api

    def _own_api(self) -> MTurkAPI:
        """The api of the requester this provider was configured with."""
        if self.args is None or "provider" not in self.args:
            raise ProviderError(str(self.PROVIDER_TYPE), (
                "this provider was made without a configuration naming its requester"))
        return self._api(self.get_requester(self.db, self.args))

    # -- a task run's work ------------------------------------------------------------------

    def setup_resources_for_task_run(
        self, task_run: TaskRun, args: Any, shared_state: Any, server_url: str
    ) -> None:
        """Make the run's HIT type (and the qualification types it requires)."""
        requester = task_run.get_requester()
        api = self._api(requester)
        if not server_url.startswith("https://"):
            logger.warning("task run %s is served at %s: MTurk shows HTTPS pages only, so "
                           "workers cannot open it; use an architect that serves HTTPS",
                           task_run.db_id, server_url)
        task = args.get("task") if isinstance(args, Mapping) else None
        task = task if task is not None else task_run.args.get("task", Args())
        types = QualificationTypes(self.db, str(self.PROVIDER_TYPE), api)
        requirements = mturk_requirements(str(self.PROVIDER_TYPE), shared_state, types)
        answer = api.call("create_hit_type", f"creating the HIT type of task run {task_run.db_id}",
                          **hit_type_params(task, requirements))
        hit_type_id = str(answer["HITTypeId"])
        self.db.put_provider_record(str(self.PROVIDER_TYPE), "run", task_run.db_id, {
            "requester_id": requester.db_id, "hit_type_id": hit_type_id,
            "lifetime": int(task.get("task_lifetime_in_seconds") or _DEFAULT_LIFETIME),
        })
        self._task_run_id = task_run.db_id
        logger.info("task run %s: HIT type %s on %s (%d qualification requirements)",
                    task_run.db_id, hit_type_id, self.PROVIDER_TYPE, len(requirements))

    def _run_hits(self, task_run_id: str) -> RunHITs | None:
        run = self.db.get_provider_record(str(self.PROVIDER_TYPE), "run", str(task_run_id))
        if run is None:
            return None
        api = self._api(Requester(self.db, run["requester_id"]))
        return RunHITs(self.db, str(self.PROVIDER_TYPE), str(task_run_id), api)

    def launch_units(self, units: list[Any], server_url: str) -> None:
        """One HIT per unit not published yet (idempotent: see `hits.py`)."""
        if not units:
            return
        hits = self._run_hits(self._task_run_id) if self._task_run_id else None
        if hits is None:
            raise ProviderError(str(self.PROVIDER_TYPE), (
                "launch_units before setup_resources_for_task_run: the run has no HIT type"))
        hits.launch([str(u.unit_id) for u in units], server_url)

    def expire_units(self, units: list[Any]) -> None:
        """Withdraw a HIT nobody accepted for each unit (see `hits.py`)."""
        by_run: dict[str, list[str]] = {}
        for unit in units:
            unit_id = str(unit.unit_id)
            run_id = self._task_run_id or str(self.db.get_unit(unit_id)["task_run_id"])
            by_run.setdefault(run_id, []).append(unit_id)
        with self._expire_lock:
            for run_id, unit_ids in by_run.items():
                hits = self._run_hits(run_id)
                if hits is not None:
                    hits.expire(unit_ids)

    def open_units(self, task_run: TaskRun) -> list[str]:
        hits = self._run_hits(task_run.db_id)
        return [] if hits is None else hits.open_unit_ids()

    # -- workers arriving -----------------------------------------------------------------

    def worker_name_from_registration(self, provider_data: dict[str, Any]) -> str:
        name = provider_data.get("worker_name")
        if not isinstance(name, str) or not _is_worker_id(name):
            raise MalformedRequest(
                "provider_data.worker_name must be the MTurk worker id (workerId: A and "
                "capital letters or digits)")
        return name

    def assignment_from_registration(self, provider_data: dict[str, Any]) -> str | None:
        value = provider_data.get("assignment_id")
        if not isinstance(value, str) or not value or value == PREVIEW_ASSIGNMENT:
            return None
        return value

    def worker_name_from_request(self, caller: Mapping[str, str]) -> str | None:
        """The shim's `getProviderURLParams` sends MTurk's `workerId` on every request."""
        return caller.get("workerId") or None

    def wrap_crowd_source_js(self) -> str:
        return _SHIM.read_text()

    # -- review ---------------------------------------------------------------------------

    def _saved_assignment(self, agent_id: str) -> str | None:
        """The MTurk assignment saved on an agent (`provider_assignment_id`), if any."""
        state = self.db.get_agent(agent_id).get("state") or {}
        assignment = state.get("provider_assignment_id")
        return str(assignment) if assignment and assignment != PREVIEW_ASSIGNMENT else None

    def _assignment_of(self, agent: Agent) -> str:
        assignment = self._saved_assignment(agent.db_id)
        if assignment is None:
            raise ProviderError(str(self.PROVIDER_TYPE), (
                f"agent {agent.db_id} has no MTurk assignment (provider_assignment_id): its "
                "worker did not come through an MTurk HIT"))
        return assignment

    def _agent_api(self, agent: Agent) -> MTurkAPI:
        return self._api(agent.get_task_run().get_requester())

    def _decide(self, agent: Agent, method: str, doing: str, final_status: str,
                **params: Any) -> None:
        api = self._agent_api(agent)
        assignment = self._assignment_of(agent)
        try:
            api.call(method, f"{doing} assignment {assignment}", AssignmentId=assignment,
                     **params)
        except ProviderError:
            if self._assignment_status(api, assignment) == final_status:
                return  # done before (a retry whose first answer was lost)
            raise

    def _assignment_status(self, api: MTurkAPI, assignment: str) -> str | None:
        try:
            answer = api.call("get_assignment", f"reading assignment {assignment}",
                              AssignmentId=assignment)
        except ProviderError:
            return None
        return str(answer["Assignment"].get("AssignmentStatus"))

    def approve_work(self, agent: Agent, review_note: str | None = None) -> None:
        feedback = {"RequesterFeedback": review_note[:_MAX_FEEDBACK]} if review_note else {}
        self._decide(agent, "approve_assignment", "approving", "Approved",
                     OverrideRejection=True, **feedback)

    def reject_work(self, agent: Agent, reason: str) -> None:
        feedback = (reason or "Your work did not meet the task's requirements.")
        self._decide(agent, "reject_assignment", "rejecting", "Rejected",
                     RequesterFeedback=feedback[:_MAX_FEEDBACK])

    def pay_bonus(self, payment: Payment) -> str:
        """SendBonus with the payment's request token, so MTurk pays a token once."""
        worker_name = str(self.db.get_worker(payment.worker_id)["worker_name"])
        assignment = self._bonus_assignment(payment)
        api = self._api(Requester(self.db, payment.requester_id))
        sent = api.call_once(
            "send_bonus", f"paying bonus {payment.db_id} to worker {worker_name}",
            WorkerId=worker_name, BonusAmount=f"{payment.amount:.2f}", AssignmentId=assignment,
            Reason=payment.reason or "Bonus", UniqueRequestToken=payment.request_token)
        if sent is None:
            logger.info("bonus %s: MTurk had paid it already (same request token)",
                        payment.db_id)
        return f"mturk-bonus:{payment.request_token}"

    def _bonus_assignment(self, payment: Payment) -> str:
        """An MTurk assignment of the worker's for this requester: their agent's on the
        payment's unit, else their latest one."""
        if payment.unit_id is not None:
            for agent in self.db.find_agents(unit_id=payment.unit_id, worker_id=payment.worker_id):
                assignment = self._saved_assignment(agent.db_id)
                if assignment is not None:
                    return assignment
        agents = self.db.find_agents(worker_id=payment.worker_id,
                                     provider_type=str(self.PROVIDER_TYPE))
        def newest_first(agent: Agent) -> tuple[float, str]:
            return getattr(agent, "creation_date", 0.0), agent.db_id

        for agent in sorted(agents, key=newest_first, reverse=True):
            if str(agent.get_task_run().requester_id) != str(payment.requester_id):
                continue
            assignment = self._saved_assignment(agent.db_id)
            if assignment is not None:
                return assignment
        raise ProviderError(str(self.PROVIDER_TYPE), (
            f"bonus {payment.db_id}: MTurk pays bonuses on an assignment the worker did for "
            "this requester, and this worker has none here"))

    def _check_worker(self, worker: Worker) -> str:
        if worker.provider_type != self.PROVIDER_TYPE:
            raise ProviderError(str(self.PROVIDER_TYPE), (
                f"worker {worker.worker_name} is a {worker.provider_type} worker, not one of "
                f"{self.PROVIDER_TYPE}"))
        return worker.worker_name

    def block_worker(self, worker: Worker, requester: Requester, reason: str) -> None:
        """A block of the requester's MTurk account (all its HITs, any task)."""
        name = self._check_worker(worker)
        self._api(requester).call("create_worker_block", f"blocking worker {name}",
                                  WorkerId=name, Reason=reason or "Blocked by the requester")

    def unblock_worker(self, worker: Worker, requester: Requester) -> None:
        name = self._check_worker(worker)
        self._api(requester).call("delete_worker_block", f"unblocking worker {name}",
                                  WorkerId=name, Reason="Unblocked by the requester")

    def grant_qualification(self, worker: Worker, qualification_name: str, value: int) -> None:
        """Associate the worker with the MTurk type mirroring `qualification_name`, in
        the account of the requester this provider is configured with."""
        name = self._check_worker(worker)
        api = self._own_api()
        QualificationTypes(self.db, str(self.PROVIDER_TYPE), api).grant(
            name, qualification_name, value)

    def revoke_qualification(self, worker: Worker, qualification_name: str) -> None:
        name = self._check_worker(worker)
        api = self._own_api()
        QualificationTypes(self.db, str(self.PROVIDER_TYPE), api).revoke(name, qualification_name)

    def send_feedback_message(self, worker: Worker, unit: Unit, text: str) -> None:
        """NotifyWorkers from the requester of the unit's run (MTurk delivers it by email;
        only to workers who worked for that requester)."""
        name = self._check_worker(worker)
        if not text.strip() or len(text) > _MAX_MESSAGE:
            raise ProviderError(str(self.PROVIDER_TYPE), (
                f"a message to a worker has 1 to {_MAX_MESSAGE} characters, not {len(text)}"))
        task_name = unit.get_task().task_name
        subject = f"About your work on {task_name}"[:_MAX_SUBJECT]
        answer = self._api(unit.get_requester()).call(
            "notify_workers", f"messaging worker {name}", Subject=subject,
            MessageText=text, WorkerIds=[name])
        for failure in answer.get("NotifyWorkersFailureStatuses") or []:
            raise ProviderError(str(self.PROVIDER_TYPE), (
                f"could not message worker {name}: "
                f"{failure.get('NotifyWorkersFailureMessage') or failure.get('NotifyWorkersFailureCode')}"))


class SandboxMTurkProvider(MTurkProvider):
    """MTurk's sandbox: the same provider on MTurk's test endpoint, where no money moves."""

    PROVIDER_TYPE = SANDBOX_PROVIDER_TYPE
    ArgsClass = SandboxMTurkProviderArgs
    SANDBOX = True


def _is_worker_id(name: str) -> bool:
    return 1 < len(name) <= 64 and name[0] == "A" and name.isascii() and \
        name.isalnum() and name.upper() == name
