"""`prolific`: work published as Prolific studies, one per task run.

A unit is a place in the run's study (`studies.py`); a participant follows the study's
URL to the task server with `PROLIFIC_PID` (the worker), `SESSION_ID` (their
submission: the assignment) and `STUDY_ID`, and the page shim sends them back to
Prolific's completion URL with the study's completion code once the task is
submitted. Review decisions are submission transitions; bonuses are Prolific's bulk
bonus payments (`bonuses.py`); blocks and qualifications are participant groups
(`groups.py`). Credentials: `credentials.py`.

Prolific has no soft rejection: a soft rejection approves (the worker is paid; our
records keep the work as unusable). Requesting a return instead would leave the
worker unpaid unless they agree, which is not what a soft rejection means.
"""

from __future__ import annotations

import functools
import math
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mephisto.abstractions.crowd_provider import (
    Capability,
    CrowdProvider,
    ProviderArgs,
    RequesterCheck,
)
from mephisto.abstractions.providers.prolific import credentials as tokens
from mephisto.abstractions.providers.prolific.bonuses import Bonuses
from mephisto.abstractions.providers.prolific.client import (
    PROVIDER_TYPE,
    ProlificAPIError,
    ProlificClient,
    register_hint,
)
from mephisto.abstractions.providers.prolific.groups import (
    ALLOWLIST,
    BLOCKLIST,
    Groups,
    block_group_name,
    group_filter,
    qualification_group_name,
)
from mephisto.abstractions.providers.prolific.studies import RunStudies, StudyPlan
from mephisto.data_model.requester import Requester
from mephisto.errors import ConfigError, EntryAlreadyExists, MalformedRequest, ProviderError

if TYPE_CHECKING:
    from mephisto.data_model.agent import Agent
    from mephisto.data_model.payment import Payment
    from mephisto.data_model.task_run import TaskRun
    from mephisto.data_model.unit import Unit
    from mephisto.data_model.worker import Worker
    from mephisto.db.database import MephistoDB

_SHIM = Path(__file__).with_name("wrap_crowd_source.js")
_PARTICIPANT_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
REJECTION_CATEGORIES = frozenset({
    "TOO_QUICKLY", "TOO_SLOWLY", "FAILED_INSTRUCTIONS", "INCOMP_LONGITUDINAL", "FAILED_CHECK",
    "LOW_EFFORT", "MALINGERING", "NO_CODE", "BAD_CODE", "NO_DATA", "UNSUPP_DEVICE", "OTHER",
})
MIN_REJECTION_MESSAGE = 100  # characters Prolific asks of a rejection's message
MAX_REASON_CHARS = 2000
_REJECTION_FOOTER = (
    "This submission was reviewed and could not be accepted for the reason above. If you "
    "think this is a mistake, please message the researcher through Prolific."
)


@dataclass
class ProlificProviderArgs(ProviderArgs):
    _provider_type: str = PROVIDER_TYPE
    requester_name: str = field(
        default="???", metadata={"help": "Registered Prolific requester to launch as."})
    prolific_external_study_url: str = field(default="", metadata={
        "help": "Public URL participants open (default: the task server's URL); Prolific's "
                "PROLIFIC_PID, STUDY_ID and SESSION_ID parameters are added to it."})
    prolific_estimated_completion_time_in_minutes: int = field(default=5, metadata={
        "help": "Minutes a unit takes (Prolific's estimated_completion_time)."})
    prolific_workspace_name: str = field(default="My Workspace", metadata={
        "help": "Title of the Prolific workspace that pays and holds the groups."})
    prolific_project_name: str = field(default="", metadata={
        "help": "Project of the workspace for the studies (made if missing; empty: "
                "Prolific's default)."})
    prolific_filters: list[Any] = field(default_factory=list, metadata={
        "help": "Prolific filter objects added to every study (e.g. age, country)."})
    prolific_allowlist_qualifications: list[str] = field(default_factory=list, metadata={
        "help": "Only workers granted one of these qualifications (mirrored as participant "
                "groups) see the study."})
    prolific_rejection_category: str = field(default="OTHER", metadata={
        "help": "Prolific rejection category of rejections: " + ", ".join(
            sorted(REJECTION_CATEGORIES))})


class ProlificProvider(CrowdProvider):
    PROVIDER_TYPE = PROVIDER_TYPE
    ArgsClass = ProlificProviderArgs
    CAPABILITIES = frozenset({
        Capability.BALANCE, Capability.BONUS, Capability.BLOCK, Capability.QUALIFICATIONS,
        Capability.MESSAGES,
    })
    FEE_RATE = 1 / 3  # Prolific's service fee on rewards and bonuses (before any VAT)

    def __init__(self, db: MephistoDB, args: Any = None) -> None:
        super().__init__(db, args)
        self._clients: dict[str, ProlificClient] = {}
        self._clients_lock = threading.Lock()
        self.studies = RunStudies(db, self._client)
        self.groups = Groups(db)
        self.bonuses = Bonuses(db)

    @classmethod
    def assert_task_args(cls, args: Any, shared_state: Any) -> None:
        provider = _section(args, "provider")
        category = provider.get("prolific_rejection_category", "OTHER")
        if category not in REJECTION_CATEGORIES:
            raise ConfigError(f"prolific_rejection_category must be one of "
                              f"{', '.join(sorted(REJECTION_CATEGORIES))}, not {category!r}",
                              key="mephisto.provider.prolific_rejection_category")
        if int(provider.get("prolific_estimated_completion_time_in_minutes", 5)) < 1:
            raise ConfigError("prolific_estimated_completion_time_in_minutes must be >= 1",
                              key="mephisto.provider.prolific_estimated_completion_time_in_minutes")
        architect = _section(args, "architect").get("_architect_type")
        if architect in ("local", "mock") and not provider.get("prolific_external_study_url"):
            raise ConfigError(
                f"Prolific participants cannot reach the {architect} architect's server: use "
                "a public architect, or set mephisto.provider.prolific_external_study_url to "
                "a public URL that reaches it", key="mephisto.provider.prolific_external_study_url")

    # -- settings and clients -------------------------------------------------------------

    def _setting(self, name: str, default: Any) -> Any:
        value = _section(self.args, "provider").get(name)
        return default if value in (None, "", "???") else value

    def _client(self, requester_name: str) -> ProlificClient:
        with self._clients_lock:
            client = self._clients.get(requester_name)
            if client is None:
                key = tokens.load_api_key(requester_name)
                if key is None:
                    raise ProviderError(PROVIDER_TYPE, f"no API token for requester "
                                        f"{requester_name}: {register_hint(requester_name)}")
                client = self._clients[requester_name] = ProlificClient(key)
            return client

    def _requester_of_run(self, task_run_id: str) -> str:
        requester_id = self.db.get_task_run(task_run_id)["requester_id"]
        return str(self.db.get_requester(str(requester_id))["requester_name"])

    def _default_requester(self) -> str:
        name = self._setting("requester_name", None)
        if name is None:
            raise ProviderError(PROVIDER_TYPE, "no requester: set mephisto.provider."
                                "requester_name to a registered Prolific requester")
        return str(name)

    def _workspace(self, requester_name: str) -> str:
        title = str(self._setting("prolific_workspace_name", "My Workspace"))
        return self.groups.workspace_id(self._client(requester_name), requester_name, title)

    # -- requesters ---------------------------------------------------------------------

    @classmethod
    def register_requester(
        cls, db: MephistoDB, requester_name: str, credentials: Mapping[str, str]
    ) -> Requester:
        """The token (`api_key`) is stored in a file of the user's (`credentials.py`);
        without one, the requester uses `PROLIFIC_API_KEY`."""
        unknown = sorted(set(credentials) - {"api_key"})
        if unknown:
            raise ProviderError(PROVIDER_TYPE, f"unknown credentials {', '.join(unknown)}: "
                                "Prolific takes api_key=<your API token>")
        found = db.find_requesters(requester_name=requester_name)
        if found and found[0].provider_type != PROVIDER_TYPE:
            raise ProviderError(PROVIDER_TYPE, f"requester {requester_name!r} already exists "
                                f"for {found[0].provider_type}: pick another name")
        if "api_key" in credentials:
            tokens.store_api_key(requester_name, credentials["api_key"])
        elif tokens.load_api_key(None) is None:
            raise ProviderError(PROVIDER_TYPE, f"no API token given: {register_hint()}")
        return _find_or_create_requester(db, requester_name)

    def get_requester(self, db: MephistoDB, args: Any) -> Requester:
        name = str(_section(args, "provider").get("requester_name") or "???")
        found = db.find_requesters(requester_name=name, provider_type=PROVIDER_TYPE)
        if found:
            return found[0]
        if name != "???" and tokens.load_api_key(None) is not None:
            return _find_or_create_requester(db, name)  # the token is PROLIFIC_API_KEY
        raise ProviderError(PROVIDER_TYPE, f"no Prolific requester named {name!r}: "
                            f"{register_hint(name if name != '???' else '<name>')}")

    def check_requester(self, requester: Requester) -> RequesterCheck:
        name = requester.requester_name
        try:
            client = self._client(name)
            me = client.get("users/me/")
            workspace = self._workspace(name)
            balance = client.get(f"workspaces/{workspace}/balance/")
        except ProlificAPIError as exc:
            if exc.status in (401, 403):
                return RequesterCheck(False, f"prolific: the API token of requester {name} was "
                                      f"refused (HTTP {exc.status}): {register_hint(name)}")
            return RequesterCheck(False, str(exc))
        except ProviderError as exc:
            return RequesterCheck(False, str(exc))
        available = float(balance.get("available_balance") or 0) / 100
        currency = balance.get("currency_code") or me.get("currency_code") or ""
        who = me.get("email") or me.get("name") or me.get("id")
        return RequesterCheck(True, f"ready: Prolific account {who}, workspace "
                              f"{self._setting('prolific_workspace_name', 'My Workspace')!r} "
                              f"has {available:.2f} {currency} available", balance=available)

    # -- a task run's work ------------------------------------------------------------------

    def setup_resources_for_task_run(
        self, task_run: TaskRun, args: Any, shared_state: Any, server_url: str
    ) -> None:
        """Make the requester's block group before its study names it."""
        requester = self._requester_of_run(task_run.db_id)
        workspace = self._workspace(requester)
        self.groups.group_id(self._client(requester), workspace, block_group_name(requester))

    def cleanup_resources_from_task_run(self, task_run: TaskRun, server_url: str) -> None:
        """The run stops: its study is stopped if the run is completed (final on
        Prolific), else paused, for a resumed run to start again."""
        completed = bool(self.db.get_task_run(task_run.db_id)["is_completed"])
        self.studies.close_all(task_run.db_id, final=completed)

    def launch_units(self, units: list[Any], server_url: str) -> None:
        for task_run_id, unit_ids in self._by_run(units).items():
            requester = self._requester_of_run(task_run_id)
            plan = functools.partial(self._plan, task_run_id, requester, unit_ids, server_url)
            self.studies.launch(task_run_id, requester, unit_ids, plan)

    def expire_units(self, units: list[Any]) -> None:
        for task_run_id, unit_ids in self._by_run(units).items():
            self.studies.expire(task_run_id, unit_ids)

    def open_units(self, task_run: TaskRun) -> list[str]:
        return self.studies.open_units(task_run.db_id)

    def _by_run(self, units: list[Any]) -> dict[str, list[str]]:
        runs: dict[str, list[str]] = {}
        for unit in units:
            unit_id = str(unit.unit_id)
            runs.setdefault(str(self.db.get_unit(unit_id)["task_run_id"]), []).append(unit_id)
        return runs

    def _plan(self, task_run_id: str, requester: str, unit_ids: list[str],
              server_url: str) -> StudyPlan:
        task = _section(self.args, "task") or _section(self._task_run_args(task_run_id), "task")
        reward = task.get("task_reward")
        if reward in (None, "???"):
            reward = self.db.get_unit(unit_ids[0])["pay_amount"]
        minutes = int(self._setting("prolific_estimated_completion_time_in_minutes", 5))
        duration = int(task.get("assignment_duration_in_seconds") or 0)
        max_minutes = math.ceil(duration / 60) if duration > 0 else None
        per_worker = int(task.get("maximum_units_per_worker") or 0)
        client = self._client(requester)
        workspace = self._workspace(requester)
        filters = [dict(f) for f in self._setting("prolific_filters", [])]
        filters += group_filter(BLOCKLIST, [
            self.groups.group_id(client, workspace, block_group_name(requester))])
        filters += group_filter(ALLOWLIST, [
            self.groups.group_id(client, workspace, qualification_group_name(q))
            for q in self._setting("prolific_allowlist_qualifications", [])])
        project = self._setting("prolific_project_name", None)
        return StudyPlan(
            name=str(task.get("task_title") or "A task for Mephisto"),
            description=str(task.get("task_description") or task.get("task_title")
                            or "A short task."),
            base_url=str(self._setting("prolific_external_study_url", server_url)),
            reward_cents=_cents(reward), minutes=minutes,
            max_minutes=max_minutes if max_minutes and max_minutes > minutes else None,
            per_participant=per_worker if per_worker > 0 else -1, filters=filters,
            project_id=self.groups.project_id(client, workspace, project) if project else None,
        )

    def _task_run_args(self, task_run_id: str) -> Any:
        from mephisto.data_model.task_run import TaskRun

        return TaskRun(self.db, task_run_id).args

    # -- workers arriving -----------------------------------------------------------------

    def worker_name_from_registration(self, provider_data: dict[str, Any]) -> str:
        name = provider_data.get("worker_name")
        if not isinstance(name, str) or not _PARTICIPANT_ID.fullmatch(name):
            raise MalformedRequest("provider_data.worker_name must be a Prolific participant id "
                                   "(PROLIFIC_PID: up to 64 letters, digits, _ or -)")
        return name

    def assignment_from_registration(self, provider_data: dict[str, Any]) -> str | None:
        value = provider_data.get("assignment_id")  # the submission: SESSION_ID
        return value if isinstance(value, str) and _PARTICIPANT_ID.fullmatch(value) else None

    def worker_name_from_request(self, caller: Mapping[str, str]) -> str | None:
        """The shim's `getProviderURLParams` sends `PROLIFIC_PID` on every request."""
        return caller.get("PROLIFIC_PID") or None

    def wrap_crowd_source_js(self) -> str:
        return _SHIM.read_text()

    # -- review ---------------------------------------------------------------------------

    def _submission(self, agent: Agent) -> tuple[str, str]:
        """(requester name, Prolific submission id) of an agent."""
        state = self.db.get_agent(agent.db_id).get("state") or {}
        submission = state.get("provider_assignment_id")
        if not isinstance(submission, str) or not submission:
            raise ProviderError(PROVIDER_TYPE, f"agent {agent.db_id} has no Prolific submission "
                                "id (SESSION_ID): decide it in Prolific's web app")
        return self._requester_of_run(str(agent.task_run_id)), submission

    def approve_work(self, agent: Agent, review_note: str | None = None) -> None:
        requester, submission = self._submission(agent)
        self._client(requester).post(f"submissions/{submission}/transition/",
                                     {"action": "APPROVE"})

    def reject_work(self, agent: Agent, reason: str) -> None:
        category = str(self._setting("prolific_rejection_category", "OTHER"))
        self.reject_with_category(agent, reason, category)

    def reject_with_category(self, agent: Agent, reason: str, category: str) -> None:
        """Reject with one of Prolific's `REJECTION_CATEGORIES`; `reason` is shown to the
        worker (Prolific wants at least 100 characters: an explanation follows it)."""
        if category not in REJECTION_CATEGORIES:
            raise ProviderError(PROVIDER_TYPE, f"unknown rejection category {category!r}: "
                                f"use one of {', '.join(sorted(REJECTION_CATEGORIES))}")
        requester, submission = self._submission(agent)
        self._client(requester).post(f"submissions/{submission}/transition/", {
            "action": "REJECT", "rejection_category": category,
            "message": rejection_message(reason),
        })

    def pay_bonus(self, payment: Payment) -> str:
        """Paid on the submission of the payment's unit by its worker (or, without a unit,
        the worker's latest submission to a study of ours)."""
        agents = self.db.find_agents(worker_id=payment.worker_id, provider_type=PROVIDER_TYPE,
                                     unit_id=payment.unit_id)
        agents.sort(key=lambda a: float(getattr(a, "creation_date", 0) or 0), reverse=True)
        for agent in agents:
            state = self.db.get_agent(agent.db_id).get("state") or {}
            submission = state.get("provider_assignment_id")
            if isinstance(submission, str) and submission:
                requester = str(self.db.get_requester(payment.requester_id)["requester_name"])
                return self.bonuses.pay(self._client(requester), payment, submission)
        where = f"unit {payment.unit_id}" if payment.unit_id else "any study of yours"
        raise ProviderError(PROVIDER_TYPE, f"cannot pay worker {payment.worker_id} a bonus: "
                            f"Prolific pays bonuses on a submission, and none is known for "
                            f"{where}")

    def block_worker(self, worker: Worker, requester: Requester, reason: str) -> None:
        """Add the worker to the requester's block group (every study's blocklist)."""
        name = requester.requester_name
        client = self._client(name)
        group = self.groups.group_id(client, self._workspace(name), block_group_name(name))
        self.groups.add(client, group, [worker.worker_name])

    def unblock_worker(self, worker: Worker, requester: Requester) -> None:
        name = requester.requester_name
        client = self._client(name)
        group = self.groups.group_id(client, self._workspace(name), block_group_name(name))
        self.groups.remove(client, group, [worker.worker_name])

    def grant_qualification(self, worker: Worker, qualification_name: str, value: int) -> None:
        """Mirror a grant: the worker is in the qualification's group while its value is
        not 0 (a group has members, not values; the value is kept in our records)."""
        name = self._default_requester()
        client = self._client(name)
        group = self.groups.group_id(client, self._workspace(name),
                                     qualification_group_name(qualification_name))
        if value:
            self.groups.add(client, group, [worker.worker_name])
        else:
            self.groups.remove(client, group, [worker.worker_name])
        self.groups.set_granted(worker.db_id, qualification_name, int(value))

    def revoke_qualification(self, worker: Worker, qualification_name: str) -> None:
        name = self._default_requester()
        client = self._client(name)
        group = self.groups.group_id(client, self._workspace(name),
                                     qualification_group_name(qualification_name))
        self.groups.remove(client, group, [worker.worker_name])
        self.groups.set_granted(worker.db_id, qualification_name, None)

    def send_feedback_message(self, worker: Worker, unit: Unit, text: str) -> None:
        """A message to the participant about the study of the unit's run (Prolific
        shows it in their messages)."""
        if worker.provider_type != PROVIDER_TYPE:
            raise ProviderError(PROVIDER_TYPE, f"worker {worker.worker_name} is a "
                                f"{worker.provider_type} worker, not one of Prolific")
        if not text.strip():
            raise ProviderError(PROVIDER_TYPE, "a message to a participant needs a text")
        run_id = str(unit.task_run_id)
        study_id = (self.studies.record(run_id) or {}).get("study_id")
        if not study_id:
            raise ProviderError(PROVIDER_TYPE, f"run {run_id} has no Prolific study to "
                                "write about")
        self._client(self._requester_of_run(run_id)).post("messages/", {
            "recipient_id": worker.worker_name, "body": text, "study_id": study_id})


def rejection_message(reason: str) -> str:
    """What a rejected worker reads: our reason, then why and what they can do (which
    also makes it as long as Prolific asks: `MIN_REJECTION_MESSAGE` characters)."""
    text = " ".join(str(reason).split())[:MAX_REASON_CHARS] or "No reason was given."
    return f"{text}\n\n{_REJECTION_FOOTER}"


def _cents(reward: Any) -> int:
    """A reward in currency units (task_reward: dollars, pounds) in Prolific's minor units."""
    cents = (Decimal(str(reward)) * 100).quantize(Decimal(1), rounding=ROUND_HALF_UP)
    if cents < 1:
        raise ConfigError(f"task_reward must be at least 0.01 for Prolific, not {reward!r}",
                          key="mephisto.task.task_reward")
    return int(cents)


def _section(args: Any, name: str) -> Any:
    if args is None:
        return {}
    section = args.get(name) if hasattr(args, "get") else getattr(args, name, None)
    return section if section is not None else {}


def _find_or_create_requester(db: MephistoDB, name: str) -> Requester:
    found = db.find_requesters(requester_name=name)
    if found and found[0].provider_type != PROVIDER_TYPE:
        raise ProviderError(PROVIDER_TYPE, f"requester {name!r} already exists for "
                            f"{found[0].provider_type}: pick another name")
    if found:
        return found[0]
    try:
        return Requester(db, db.new_requester(name, PROVIDER_TYPE))
    except EntryAlreadyExists:
        return db.find_requesters(requester_name=name)[0]
