"""One Prolific study per task run: places for its units, kept in our records first.

Records (`provider_records`, provider "prolific"):

- kind `study`, key task run id: the run's study (`study_id` once created), the count
  of `places` we want on Prolific, `open` units, `spare` places (of expired units, used
  again before asking for more), whether we `stopped` it, its completion code, and the
  `token` in its internal name that finds a study whose creation answer was lost;
- kind `unit:<task run id>`, key unit id: `open` (launched, not expired), `launches`.

A change is written to the records first, in one transaction, then Prolific is
brought to it (`sync`): create the draft, raise `total_available_places` to `places`
(Prolific only raises it, so it is compared, never added to), publish, start a paused
study; pause it when nothing is open. Every step reads Prolific's state before acting,
so a retried launch or expiry adds no place twice, and a new process finds the study
from the records. A study that ran out of places moves to AWAITING REVIEW by itself;
raising its places (more units launched) makes it ACTIVE again. Stopping is final on
Prolific, so a study is stopped only when its run is over (`close_all(final=True)`).
"""

from __future__ import annotations

import logging
import secrets
import string
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mephisto.abstractions.providers.prolific.client import PROVIDER_TYPE, ProlificClient
from mephisto.errors import ProviderError

if TYPE_CHECKING:
    from mephisto.db.database import MephistoDB

logger = logging.getLogger(__name__)

STUDY = "study"
UNPUBLISHED, PUBLISHING, ACTIVE = "UNPUBLISHED", "PUBLISHING", "ACTIVE"
SCHEDULED, PAUSED = "SCHEDULED", "PAUSED"
AWAITING_REVIEW, COMPLETED = "AWAITING REVIEW", "COMPLETED"
TAKING = frozenset({PUBLISHING, ACTIVE, SCHEDULED})  # participants may start: PAUSE
RUNNING = TAKING | {PAUSED}  # may be stopped
FINISHED = frozenset({AWAITING_REVIEW, COMPLETED})  # no participant can start
URL_PARAMETERS = ("PROLIFIC_PID={{%PROLIFIC_PID%}}&STUDY_ID={{%STUDY_ID%}}"
                  "&SESSION_ID={{%SESSION_ID%}}")
CODE_PARAMETER = "cc"  # the study's completion code, read by the page shim
_CODE_ALPHABET = string.ascii_uppercase + string.digits


def unit_kind(task_run_id: str) -> str:
    return f"unit:{task_run_id}"


@dataclass(frozen=True)
class StudyPlan:
    """What a new study is made of (read from the run's configuration)."""

    name: str
    description: str
    base_url: str
    reward_cents: int
    minutes: int
    max_minutes: int | None
    per_participant: int  # -1: no limit
    filters: list[dict[str, Any]]
    project_id: str | None


def study_url(base_url: str, completion_code: str) -> str:
    """The URL participants open: Prolific fills in the `{{%...%}}` placeholders."""
    joiner = "&" if "?" in base_url else "?"
    return f"{base_url}{joiner}{URL_PARAMETERS}&{CODE_PARAMETER}={completion_code}"


def create_body(plan: StudyPlan, internal_name: str, places: int,
                completion_code: str) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": plan.name,
        "internal_name": internal_name,
        "description": plan.description,
        "external_study_url": study_url(plan.base_url, completion_code),
        "prolific_id_option": "url_parameters",
        "completion_codes": [{
            "code": completion_code, "code_type": "COMPLETED",
            "actions": [{"action": "MANUALLY_REVIEW"}],
        }],
        "total_available_places": places,
        "estimated_completion_time": plan.minutes,
        "reward": plan.reward_cents,
        "submissions_config": {"max_submissions_per_participant": plan.per_participant},
        "filters": plan.filters,
    }
    if plan.max_minutes is not None:
        body["maximum_allowed_time"] = plan.max_minutes
    if plan.project_id:
        body["project"] = plan.project_id
    return body


class RunStudies:
    """The studies of task runs, as our records and Prolific know them."""

    def __init__(self, db: MephistoDB, client_for: Callable[[str], ProlificClient]) -> None:
        self.db = db
        self.client_for = client_for
        self.lock = threading.RLock()  # one change of a run's records and study at a time

    def record(self, task_run_id: str) -> dict[str, Any] | None:
        found = self.db.get_provider_record(PROVIDER_TYPE, STUDY, task_run_id)
        return dict(found) if found is not None else None

    def _put(self, task_run_id: str, record: dict[str, Any]) -> None:
        self.db.put_provider_record(PROVIDER_TYPE, STUDY, task_run_id, record)

    # -- changes ------------------------------------------------------------------------

    def launch(self, task_run_id: str, requester_name: str, unit_ids: Iterable[str],
               plan: Callable[[], StudyPlan]) -> None:
        """Open these units (those already open change nothing), then sync."""
        with self.lock:
            with self.db.transaction():
                rec = self.record(task_run_id) or _new_record(requester_name)
                if rec["stopped"]:
                    raise ProviderError(PROVIDER_TYPE, f"the study of task run {task_run_id} "
                                        "was stopped, which is final on Prolific: launch a "
                                        "new task run")
                kind = unit_kind(task_run_id)
                fresh = []
                for unit_id in unit_ids:
                    unit = self.db.get_provider_record(PROVIDER_TYPE, kind, unit_id)
                    if unit is None or not unit["open"]:
                        fresh.append((unit_id, 0 if unit is None else int(unit["launches"])))
                if fresh:
                    reuse = min(rec["spare"], len(fresh))
                    rec["places"] += len(fresh) - reuse
                    rec["spare"] -= reuse
                    rec["open"] += len(fresh)
                    for unit_id, launches in fresh:
                        self.db.put_provider_record(PROVIDER_TYPE, kind, unit_id,
                                                    {"open": True, "launches": launches + 1})
                    self._put(task_run_id, rec)
            self.sync(task_run_id, plan)

    def expire(self, task_run_id: str, unit_ids: Iterable[str]) -> None:
        """Close these units; the study is paused when none is open. Prolific cannot
        lower its places: those of expired units are `spare`, used by the next launches."""
        with self.lock:
            with self.db.transaction():
                rec = self.record(task_run_id)
                if rec is None:
                    return
                closed = self._close(task_run_id, unit_ids)
                if closed:
                    rec["open"] -= closed
                    if not rec["stopped"]:
                        rec["spare"] += closed
                    self._put(task_run_id, rec)
            if rec["open"] <= 0:
                self.sync(task_run_id, None)

    def close_all(self, task_run_id: str, final: bool) -> None:
        """Close every unit: the study is paused, or stopped when `final` (the run is
        completed: stopping is final on Prolific)."""
        with self.lock:
            with self.db.transaction():
                rec = self.record(task_run_id)
                if rec is None:
                    return
                units = self.db.find_provider_records(PROVIDER_TYPE, unit_kind(task_run_id))
                self._close(task_run_id, [k for k, v in units.items() if v["open"]])
                rec["open"] = 0
                self._put(task_run_id, rec)
            self.sync(task_run_id, None, stop=final)

    def _close(self, task_run_id: str, unit_ids: Iterable[str]) -> int:
        kind, closed = unit_kind(task_run_id), 0
        for unit_id in unit_ids:
            unit = self.db.get_provider_record(PROVIDER_TYPE, kind, unit_id)
            if unit is not None and unit["open"]:
                self.db.put_provider_record(PROVIDER_TYPE, kind, unit_id,
                                            {**unit, "open": False})
                closed += 1
        return closed

    # -- Prolific -----------------------------------------------------------------------

    def open_units(self, task_run_id: str) -> list[str]:
        """Units launched and not expired, while the study takes participants."""
        rec = self.record(task_run_id)
        if rec is None or not rec.get("study_id") or rec["open"] <= 0 or rec["stopped"]:
            return []
        study = self.client_for(rec["requester"]).get(f"studies/{rec['study_id']}/")
        if study["status"] in FINISHED and study["places_taken"] >= \
                study["total_available_places"]:
            return []  # every place was taken: nothing is open on Prolific
        units = self.db.find_provider_records(PROVIDER_TYPE, unit_kind(task_run_id))
        return sorted((k for k, v in units.items() if v["open"]), key=_unit_order)

    def sync(self, task_run_id: str, plan: Callable[[], StudyPlan] | None,
             stop: bool = False) -> dict[str, Any]:
        """Bring the run's study on Prolific to what the records say."""
        rec = self.record(task_run_id)
        if rec is None:
            return {}
        client = self.client_for(rec["requester"])
        wanted = rec["open"] > 0
        if rec.get("study_id") is None:
            if not wanted or plan is None:
                return rec
            study = self._create(task_run_id, rec, client, plan())
        else:
            study = client.get(f"studies/{rec['study_id']}/")
        study_id = study["id"]
        if wanted:
            if int(study["total_available_places"]) < rec["places"]:
                logger.info("Prolific study %s: %d places", study_id, rec["places"])
                study = client.patch(f"studies/{study_id}/",
                                     {"total_available_places": rec["places"]})
            if study["status"] == UNPUBLISHED:
                study = _transition(client, study_id, "PUBLISH")
            elif study["status"] == PAUSED:
                study = _transition(client, study_id, "START")
        elif stop and study["status"] != UNPUBLISHED:
            if study["status"] in RUNNING:
                study = _transition(client, study_id, "STOP")
            rec["stopped"], rec["spare"] = True, 0
        elif study["status"] in TAKING:
            study = _transition(client, study_id, "PAUSE")
        rec["status"] = study["status"]
        self._put(task_run_id, rec)
        return rec

    def _create(self, task_run_id: str, rec: dict[str, Any], client: ProlificClient,
                plan: StudyPlan) -> dict[str, Any]:
        internal_name = f"{plan.name} (mephisto run {task_run_id}, {rec['token']})"
        study = None
        if rec.get("create_sent"):  # an earlier answer was lost: it may exist
            study = next((s for s in client.list_all("studies/")
                          if rec["token"] in (s.get("internal_name") or "")), None)
        if study is None:
            rec["create_sent"] = True
            self._put(task_run_id, rec)
            study = client.post("studies/", create_body(plan, internal_name, rec["places"],
                                                        rec["completion_code"]))
        rec["study_id"] = study["id"]
        rec["status"] = study["status"]
        self._put(task_run_id, rec)
        logger.info("task run %s: Prolific study %s (%r, %d places)", task_run_id,
                    study["id"], plan.name, rec["places"])
        return dict(study)


def _transition(client: ProlificClient, study_id: str, action: str) -> dict[str, Any]:
    logger.info("Prolific study %s: %s", study_id, action)
    answer = client.post(f"studies/{study_id}/transition/", {"action": action})
    if isinstance(answer, dict) and "status" in answer:
        return answer
    study: dict[str, Any] = client.get(f"studies/{study_id}/")
    return study


def _new_record(requester_name: str) -> dict[str, Any]:
    return {
        "requester": requester_name, "study_id": None, "status": None,
        "token": secrets.token_hex(6), "create_sent": False,
        "completion_code": "".join(secrets.choice(_CODE_ALPHABET) for _ in range(10)),
        "places": 0, "spare": 0, "open": 0, "stopped": False,
    }


def _unit_order(unit_id: str) -> tuple[int, str]:
    return (int(unit_id), "") if unit_id.isdigit() else (0, unit_id)
