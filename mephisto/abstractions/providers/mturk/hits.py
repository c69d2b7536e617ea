"""A run's HITs: one HIT type per task run, one HIT per unit, and which units are open.

MTurk sees a run as a group of identical HITs: one HIT type, MaxAssignments 1, and an
ExternalQuestion on the task server's URL. A HIT is a seat, not a unit: whoever accepted
any HIT of the run opens the same page, and our worker pool gives them whichever unit is
open. Hence:

- review and bonuses use the MTurk assignment the worker holds, saved on their agent
  (`provider_assignment_id`), never the HIT that was launched for the unit;
- `launch` opens one seat per unit, once: the unit's HIT is created with a
  `UniqueRequestToken` recorded before the call, so a retried batch sends the same
  token and MTurk creates nothing twice; a HIT whose creation answer was lost is found
  again by the token, which its RequesterAnnotation carries;
- `expire` withdraws, per unit, one seat nobody holds: the unit's own HIT if it is still
  free, else another free HIT of the run (the unit's own was accepted by a worker the
  pool gave another unit, who keeps it and may still submit). When every HIT of the run
  is held, the unit's own HIT is expired anyway: nobody new can take it, and whoever
  holds it finds no unit for it. So MTurk never offers more seats than we have units;
- `open_unit_ids` reads our records (launched, not expired), so a new process finds
  the open units again.

Records (`provider_records` of the provider type):

    run           <task_run_id>  {"requester_id", "hit_type_id", "lifetime"}
    units:<run>   <unit_id>      {"token", "token_time", "hit_id" or None, "open"}
    hits:<run>    <hit_id>       {"unit_id", "withdrawn", "done"}
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from xml.sax.saxutils import escape

from mephisto.errors import ConfigError, ProviderError

if TYPE_CHECKING:
    from mephisto.abstractions.providers.mturk.client import MTurkAPI
    from mephisto.db.database import MephistoDB

logger = logging.getLogger(__name__)

__all__ = ["AUTO_APPROVAL_DELAY", "RunHITs", "external_question", "hit_type_params"]

AUTO_APPROVAL_DELAY = 7 * 24 * 3600  # work not reviewed in a week is approved (as Mephisto)
TOKEN_TTL = 23 * 3600  # MTurk honours a UniqueRequestToken for 24 hours
EXPIRED = datetime(2015, 1, 1, tzinfo=UTC)  # an ExpireAt in the past expires a HIT now
_QUESTION_XMLNS = ("http://mechanicalturk.amazonaws.com/AWSMechanicalTurkDataSchemas/"
                   "2006-07-14/ExternalQuestion.xsd")
_DONE_STATUSES = ("Reviewable", "Reviewing", "Disposed")  # its one assignment was used


def external_question(url: str, frame_height: int = 0) -> str:
    """The ExternalQuestion showing `url` (frame height 0: the whole window)."""
    return (f'<ExternalQuestion xmlns="{_QUESTION_XMLNS}"><ExternalURL>{escape(url)}'
            f"</ExternalURL><FrameHeight>{int(frame_height)}</FrameHeight></ExternalQuestion>")


def hit_type_params(task: Any, requirements: list[dict[str, Any]]) -> dict[str, Any]:
    """CreateHITType's parameters from the `mephisto.task` arguments."""
    for key in ("task_title", "task_description", "task_reward"):
        if task.get(key) in (None, "", "???"):
            raise ConfigError(f"mephisto.task.{key} is required: MTurk's HIT type shows it",
                              key=f"mephisto.task.{key}")
    tags = task.get("task_tags") or ""
    keywords = tags if isinstance(tags, str) else ",".join(str(t) for t in tags)
    params = {
        "AutoApprovalDelayInSeconds": AUTO_APPROVAL_DELAY,
        "AssignmentDurationInSeconds": int(task.get("assignment_duration_in_seconds") or 1800),
        "Reward": f"{float(task.get('task_reward')):.2f}",
        "Title": str(task.get("task_title")),
        "Keywords": keywords,
        "Description": str(task.get("task_description")),
        "QualificationRequirements": requirements,
    }
    if not keywords.strip():
        del params["Keywords"]  # optional on MTurk
    return params


class RunHITs:
    """The HITs of one task run, through its requester's `api`."""

    def __init__(self, db: MephistoDB, provider_type: str, run_id: str, api: MTurkAPI) -> None:
        self.db = db
        self.provider_type = provider_type
        self.run_id = str(run_id)
        self.api = api
        self._units_kind = f"units:{self.run_id}"
        self._hits_kind = f"hits:{self.run_id}"

    # -- records ------------------------------------------------------------------------

    def _run(self) -> dict[str, Any]:
        run = self.db.get_provider_record(self.provider_type, "run", self.run_id)
        if run is None or not run.get("hit_type_id"):
            raise ProviderError(self.provider_type, (
                f"task run {self.run_id} has no HIT type: setup_resources_for_task_run "
                "must run before its units are launched"))
        return dict(run)

    def _unit(self, unit_id: str) -> dict[str, Any] | None:
        record = self.db.get_provider_record(self.provider_type, self._units_kind, unit_id)
        return None if record is None else dict(record)

    def _put_unit(self, unit_id: str, record: dict[str, Any]) -> None:
        self.db.put_provider_record(self.provider_type, self._units_kind, unit_id, record)

    def _put_hit(self, hit_id: str, record: dict[str, Any]) -> None:
        self.db.put_provider_record(self.provider_type, self._hits_kind, hit_id, record)

    def open_unit_ids(self) -> list[str]:
        records = self.db.find_provider_records(self.provider_type, self._units_kind)
        return sorted((k for k, v in records.items() if v.get("open")), key=int)

    # -- launching ----------------------------------------------------------------------

    def launch(self, unit_ids: Iterable[str], url: str) -> None:
        """Create the HIT of each unit not published yet (see the module doc)."""
        run = self._run()
        todo: list[tuple[str, dict[str, Any]]] = []
        with self.db.transaction():  # every token is stored before any HIT is asked for
            for unit_id in unit_ids:
                record = self._unit(unit_id)
                if record is not None and record["open"] and record.get("hit_id"):
                    continue  # published already
                if record is None or not record["open"]:  # new, or expired: a new seat
                    record = {"token": secrets.token_hex(16), "token_time": time.time(),
                              "hit_id": None, "open": True}
                    self._put_unit(unit_id, record)
                todo.append((unit_id, record))
        created: list[tuple[str, dict[str, Any]]] = []
        try:
            for unit_id, record in todo:
                record["hit_id"] = self._create_hit(unit_id, record, run, url)
                created.append((unit_id, record))
        finally:
            if created:
                with self.db.transaction():
                    for unit_id, record in created:
                        self._put_unit(unit_id, record)
                        self._put_hit(record["hit_id"], {"unit_id": unit_id,
                                                         "withdrawn": False, "done": False})
        if created:
            logger.info("task run %s: %d HITs published on %s", self.run_id, len(created),
                        self.provider_type)

    def _create_hit(self, unit_id: str, record: dict[str, Any], run: dict[str, Any],
                    url: str) -> str:
        if time.time() - float(record["token_time"]) > TOKEN_TTL:
            found = self._find_by_token(str(record["token"]))  # MTurk forgot the token
            if found is not None:
                return found
            record.update(token=secrets.token_hex(16), token_time=time.time())
            self._put_unit(unit_id, record)
        token = str(record["token"])
        doing = f"publishing unit {unit_id} of task run {self.run_id}"
        created = self.api.call_once(
            "create_hit_with_hit_type", doing,
            HITTypeId=run["hit_type_id"], MaxAssignments=1,
            LifetimeInSeconds=int(run["lifetime"]), Question=external_question(url),
            RequesterAnnotation=f"mephisto task run {self.run_id} unit {unit_id} ({token})",
            UniqueRequestToken=token,
        )
        if created is not None:
            return str(created["HIT"]["HITId"])
        found = self._find_by_token(token)  # an earlier try went through
        if found is None:
            raise ProviderError(self.provider_type, (
                f"{doing}: MTurk says a HIT was created with request token {token}, but "
                "lists none with it; check the requester's HITs"))
        return found

    def _find_by_token(self, token: str) -> str | None:
        """The HIT whose RequesterAnnotation carries `token` (pages through ListHITs)."""
        next_token: str | None = None
        while True:
            more = {"NextToken": next_token} if next_token else {}
            page = self.api.call("list_hits", f"looking for the HIT of request token {token}",
                                 MaxResults=100, **more)
            for hit in page.get("HITs", []):
                if token in (hit.get("RequesterAnnotation") or ""):
                    return str(hit["HITId"])
            next_token = page.get("NextToken")
            if not next_token:
                return None

    # -- expiring -----------------------------------------------------------------------

    def expire(self, unit_ids: Iterable[str]) -> None:
        """Withdraw one free seat per open unit, and record the units closed (see the
        module doc). Callers serialize calls for one run."""
        hits: dict[str, dict[str, Any]] | None = None  # the run's HIT records, read once
        for unit_id in unit_ids:
            record = self._unit(unit_id)
            if record is None or not record["open"]:
                continue
            own = record.get("hit_id")
            if own is None:  # its launch never answered: a HIT may exist all the same
                own = self._find_by_token(str(record["token"]))
                if own is not None:
                    record["hit_id"] = own
                    self._put_hit(own, {"unit_id": unit_id, "withdrawn": False, "done": False})
            if hits is None:
                hits = {k: dict(v) for k, v in
                        self.db.find_provider_records(self.provider_type, self._hits_kind).items()}
            if own is not None:
                hits.setdefault(own, {"unit_id": unit_id, "withdrawn": False, "done": False})
            withdrawn = self._withdraw_if_free(own, hits[own]) if own is not None else None
            if withdrawn is None:
                withdrawn = self._withdraw_spare(hits, own)
            if withdrawn is None and own is not None and not hits[own]["withdrawn"]:
                logger.info("task run %s: every HIT is held by a worker; expiring unit %s's "
                            "own HIT %s", self.run_id, unit_id, own)
                withdrawn = self._expire_hit(own, hits[own])
            record["open"] = False
            with self.db.transaction():  # the seat and the unit are closed together
                if withdrawn is not None:
                    self._put_hit(withdrawn, hits[withdrawn])
                self._put_unit(unit_id, record)

    def _withdraw_if_free(self, hit_id: str, record: dict[str, Any]) -> str | None:
        """Expire the HIT if nobody holds it (its id then; None if it is taken)."""
        if record["withdrawn"] or record.get("done"):
            return None
        hit = self.api.call("get_hit", f"reading HIT {hit_id}", HITId=hit_id)["HIT"]
        if hit.get("HITStatus") == "Assignable" and hit.get("NumberOfAssignmentsAvailable", 0):
            return self._expire_hit(hit_id, record)
        if hit.get("HITStatus") in _DONE_STATUSES:  # used: never free again
            record["done"] = True
            self._put_hit(hit_id, record)
        return None

    def _withdraw_spare(self, hits: dict[str, dict[str, Any]], own: str | None) -> str | None:
        for hit_id, record in hits.items():
            if hit_id != own and self._withdraw_if_free(hit_id, record) is not None:
                logger.debug("task run %s: withdrew HIT %s in place of %s (held)",
                             self.run_id, hit_id, own)
                return hit_id
        return None

    def _expire_hit(self, hit_id: str, record: dict[str, Any]) -> str:
        """Expire the HIT now; its record is marked (the caller saves it)."""
        self.api.call("update_expiration_for_hit", f"expiring HIT {hit_id}", HITId=hit_id,
                      ExpireAt=EXPIRED)
        record["withdrawn"] = True
        return hit_id
