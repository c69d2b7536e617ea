"""The `inhouse` crowd provider: the requester's own participants, reached by links.

Each participant gets a link `<task server>?token=<token>`; the token (see `tokens`)
names the participant and an expiry, signed with the requester's secret. The page shim
sends it with the registration and on every request, so the server knows who calls.
Nothing is published anywhere and no money moves: what a third party would be asked
(units open, review decisions, blocks) is recorded in the provider's own records.
"""

from __future__ import annotations

import logging
import time
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
from mephisto.abstractions.providers.inhouse.tokens import (
    PROVIDER_TYPE,
    SigningKey,
    check_requester_name,
    create_secret,
    load_key,
    secret_path,
)
from mephisto.data_model.requester import Requester
from mephisto.errors import EntryAlreadyExists, MalformedRequest, ProviderError

if TYPE_CHECKING:
    from mephisto.data_model.agent import Agent
    from mephisto.data_model.task_run import TaskRun
    from mephisto.data_model.worker import Worker
    from mephisto.db.database import MephistoDB

logger = logging.getLogger(__name__)
_SHIM = Path(__file__).with_name("inhouse_wrap_crowd_source.js")
_VERIFIED_KEPT = 4096  # tokens whose signature was checked lately (requests repeat them)

# kinds of the provider's records
RUN = "run"  # task run id -> {url, requester_id, requester_name, serving}
REVIEW = "review"  # agent id -> {decision, note, worker_id, unit_id, task_run_id, at}
BLOCK = "block"  # "<requester id>:<worker id>" -> {reason, at}


@dataclass
class InhouseProviderArgs(ProviderArgs):
    _provider_type: str = PROVIDER_TYPE
    requester_name: str = field(
        default="???",
        metadata={"help": "In-house requester to launch as "
                          "(`mephisto register inhouse name=<name>` makes one)."},
    )


class InhouseProvider(CrowdProvider):
    """Participants the requester invites with signed links. Review decisions and blocks
    are recorded (no money moves, so no bonuses); qualifications are the data model's
    own, with nothing to mirror."""

    PROVIDER_TYPE = PROVIDER_TYPE
    ArgsClass = InhouseProviderArgs
    CAPABILITIES = frozenset({Capability.BLOCK, Capability.SOFT_REJECT})

    def __init__(self, db: MephistoDB, args: Any = None) -> None:
        super().__init__(db, args)
        self._key: SigningKey | None = None
        self._verified: dict[str, str] = {}  # token -> participant (signature checked)

    def _put(self, kind: str, key: str, value: Any) -> None:
        self.db.put_provider_record(PROVIDER_TYPE, kind, key, value)

    @property
    def requester_name(self) -> str:
        section = getattr(self.args, "provider", None) if self.args is not None else None
        name = section.get("requester_name") if isinstance(section, Mapping) else None
        if not isinstance(name, str) or not name or name == "???":
            raise ProviderError(PROVIDER_TYPE, "set mephisto.provider.requester_name to an "
                                "in-house requester (`mephisto register inhouse name=...`)")
        return name

    def signing_key(self) -> SigningKey:
        """The requester's key, read from its file once per provider."""
        if self._key is None:
            self._key = load_key(self.requester_name)
        return self._key

    # -- requesters ---------------------------------------------------------------------

    @classmethod
    def register_requester(
        cls, db: MephistoDB, requester_name: str, credentials: Mapping[str, str]
    ) -> Requester:
        """Create the requester and its signing secret (kept if it exists: links already
        sent keep working). Takes no credentials."""
        if credentials:
            raise ProviderError(
                PROVIDER_TYPE, "takes no credentials (its links are signed with a secret it "
                "makes itself); got " + ", ".join(sorted(credentials)))
        check_requester_name(requester_name)
        requester = _find_requester(db, requester_name)
        if requester is None:
            try:
                requester = Requester(db, db.new_requester(requester_name, PROVIDER_TYPE))
            except EntryAlreadyExists:
                requester = _find_requester(db, requester_name)
        if requester is None:  # pragma: no cover - deleted between the two reads
            raise ProviderError(PROVIDER_TYPE, f"requester {requester_name!r} vanished")
        create_secret(requester_name)
        return requester

    def get_requester(self, db: MephistoDB, args: Any) -> Requester:
        name = self.requester_name
        requester = _find_requester(db, name)
        if requester is None:
            raise ProviderError(PROVIDER_TYPE, f"no in-house requester named {name!r}: "
                                f"register it with `mephisto register inhouse name={name}`")
        self.signing_key()  # a run that could not sign or check links does not start
        return requester

    def check_requester(self, requester: Requester) -> RequesterCheck:
        if requester.provider_type != PROVIDER_TYPE:
            return RequesterCheck(False, f"{requester.requester_name!r} is a "
                                         f"{requester.provider_type} requester")
        try:
            key = load_key(requester.requester_name)
        except ProviderError as exc:
            return RequesterCheck(False, str(exc))
        return RequesterCheck(True, f"links are signed with the secret in "
                                    f"{secret_path(requester.requester_name)} "
                                    f"(key id {key.key_id})")

    # -- a task run's work ------------------------------------------------------------------

    def setup_resources_for_task_run(
        self, task_run: TaskRun, args: Any, shared_state: Any, server_url: str
    ) -> None:
        """Remember where the run is served, so links can be made for it later."""
        requester = task_run.get_requester()
        self._put(RUN, task_run.db_id, {
            "url": server_url, "requester_id": requester.db_id,
            "requester_name": requester.requester_name, "serving": True,
        })
        logger.info("in-house run %s: send each participant a link, made with "
                    "`mephisto links --run %s <names>` (or --count N)", task_run.db_id,
                    task_run.db_id)

    def cleanup_resources_from_task_run(self, task_run: TaskRun, server_url: str) -> None:
        """The run is no longer served: nothing of it stays open, and links are made for
        it again only once it is served again (resumed)."""
        run = self.db.get_provider_record(PROVIDER_TYPE, RUN, task_run.db_id)
        with self.db.transaction():
            published.record_units(self.db, PROVIDER_TYPE, "expired",
                                   self.open_units(task_run))
            if run is not None:
                self._put(RUN, task_run.db_id, {**run, "serving": False})

    def launch_units(self, units: list[Any], server_url: str) -> None:
        """Nothing to publish: participants open their links. Recorded as open."""
        published.record_units(self.db, PROVIDER_TYPE, "launched", (u.unit_id for u in units))

    def expire_units(self, units: list[Any]) -> None:
        published.record_units(self.db, PROVIDER_TYPE, "expired", (u.unit_id for u in units))

    def open_units(self, task_run: TaskRun) -> list[str]:
        return published.open_unit_ids(self.db, PROVIDER_TYPE, task_run.db_id)

    # -- workers arriving -----------------------------------------------------------------

    def worker_name_from_registration(self, provider_data: dict[str, Any]) -> str:
        """The participant the link's token names, once its signature and expiry are
        checked (`MalformedRequest` / `ForbiddenAction` otherwise, shown on the page)."""
        token = provider_data.get("token")
        if token is None or token == "":
            raise MalformedRequest(
                "This page needs your personal link: open the address you were sent "
                "(it ends in ?token=...) exactly as you received it.")
        claims = self.signing_key().verify(token, now=time.time())
        return claims.participant

    def worker_name_from_request(self, caller: Mapping[str, str]) -> str | None:
        """The participant the request's `?token=` names (its signature checked; an
        expired token still names its participant, so work begun before the expiry can
        be submitted). None when the request carries no token."""
        token = caller.get("token")
        if not token:
            return None
        known = self._verified.get(token)
        if known is not None:
            return known
        participant = self.signing_key().verify(token).participant
        if len(self._verified) >= _VERIFIED_KEPT:
            self._verified.clear()
        self._verified[token] = participant
        return participant

    def wrap_crowd_source_js(self) -> str:
        return _SHIM.read_text(encoding="utf-8")

    # -- review ---------------------------------------------------------------------------

    def _decide(self, agent: Agent, decision: str, note: str | None) -> None:
        self._put(REVIEW, agent.db_id, {
            "decision": decision, "note": note, "worker_id": agent.worker_id,
            "unit_id": agent.unit_id, "task_run_id": agent.task_run_id, "at": time.time(),
        })

    def approve_work(self, agent: Agent, review_note: str | None = None) -> None:
        self._decide(agent, "approved", review_note)

    def reject_work(self, agent: Agent, reason: str) -> None:
        self._decide(agent, "rejected", reason)

    def soft_reject_work(self, agent: Agent, review_note: str | None = None) -> None:
        self._decide(agent, "soft_rejected", review_note)

    def block_worker(self, worker: Worker, requester: Requester, reason: str) -> None:
        self._put(BLOCK, f"{requester.db_id}:{worker.db_id}", {"reason": reason,
                                                               "at": time.time()})

    def unblock_worker(self, worker: Worker, requester: Requester) -> None:
        self.db.delete_provider_record(PROVIDER_TYPE, BLOCK, f"{requester.db_id}:{worker.db_id}")


def _find_requester(db: MephistoDB, name: str) -> Requester | None:
    """The requester of this name; `ProviderError` when it belongs to another provider."""
    found = db.find_requesters(requester_name=name)
    if not found:
        return None
    requester = found[0]
    if requester.provider_type != PROVIDER_TYPE:
        raise ProviderError(PROVIDER_TYPE, f"the requester {name!r} already exists for the "
                            f"{requester.provider_type} provider; choose another name")
    return requester
