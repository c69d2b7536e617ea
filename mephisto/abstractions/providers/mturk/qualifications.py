"""Qualification requirements on MTurk, and our qualifications mirrored there.

A run's requirements (`SharedTaskState.qualifications`, made by `make_qualification_dict`)
that apply to MTurk (`applicable_providers` None, or naming this provider; the sandbox
also takes those naming `mturk`) become QualificationRequirements of the run's HIT type,
on MTurk qualification types named after ours, made on first use in the requester's
account. Workers granted one of ours are associated with its MTurk type: by
`grant_qualification`, and, for the grants made only in our database (a review, an
onboarding), by `sync_grants` when a run that requires it is set up. So MTurk shows the
HIT to the workers our pool accepts. `shared_state.mturk_specific_qualifications` are
MTurk's own requirement dicts (e.g. the locale type `00000000000000000071`), passed on as
they are.

Records (`provider_records` of the provider type): `qualification_type`,
`<profile>/<name>` -> `{"id"}`; `grants:<profile>/<name>`, `<worker name>` -> `{"value"}`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from mephisto.abstractions.providers.mturk.client import error_code
from mephisto.data_model.qualification import COMPARATORS_WITHOUT_VALUE
from mephisto.errors import ConfigError, ProviderError

if TYPE_CHECKING:
    from mephisto.abstractions.providers.mturk.client import MTurkAPI
    from mephisto.db.database import MephistoDB

logger = logging.getLogger(__name__)

__all__ = ["QualificationTypes", "check_requirements", "mturk_requirements", "ours_for"]

DEFAULT_ACTIONS_GUARDED = "DiscoverPreviewAndAccept"  # Mephisto's choice: unseen by others
_REQUIREMENT_KEYS = ("QualificationTypeId", "Comparator", "IntegerValues", "LocaleValues",
                     "RequiredToPreview", "ActionsGuarded")
_NAME_TAKEN = "already created a qualificationtype with this name"


def ours_for(provider_type: str, shared_state: Any) -> list[dict[str, Any]]:
    """The requirements of `shared_state.qualifications` that apply to this provider."""
    accepted = {provider_type, "mturk"}
    found = []
    for requirement in getattr(shared_state, "qualifications", None) or []:
        providers = requirement.get("applicable_providers")
        if providers is None or accepted & set(providers):
            found.append(requirement)
    return found


def check_requirements(provider_type: str, shared_state: Any) -> None:
    """`ConfigError` for a requirement MTurk cannot express (values are integers)."""
    for requirement in ours_for(provider_type, shared_state):
        if requirement["comparator"] in COMPARATORS_WITHOUT_VALUE:
            continue
        value = requirement.get("value")
        values = value if isinstance(value, list | tuple) else [value]
        if not values or not all(isinstance(v, int) and not isinstance(v, bool)
                                 for v in values):
            raise ConfigError(
                f"qualification {requirement['qualification_name']!r}: MTurk compares "
                f"integer values only, got {value!r} (or limit it to other providers "
                "with applicable_providers)", key="qualifications")
    for raw in getattr(shared_state, "mturk_specific_qualifications", None) or []:
        if not isinstance(raw, Mapping) or not (
                raw.get("QualificationTypeId") or raw.get("qualification_name")):
            raise ConfigError(
                "each entry of shared_state.mturk_specific_qualifications is an MTurk "
                f"QualificationRequirement with a QualificationTypeId; got {raw!r}",
                key="mturk_specific_qualifications")


def mturk_requirement(requirement: Mapping[str, Any], type_id: str) -> dict[str, Any]:
    """One of our requirements as MTurk's QualificationRequirement."""
    converted: dict[str, Any] = {"QualificationTypeId": type_id,
                                 "Comparator": requirement["comparator"],
                                 "ActionsGuarded": DEFAULT_ACTIONS_GUARDED}
    if requirement["comparator"] not in COMPARATORS_WITHOUT_VALUE:
        value = requirement["value"]
        converted["IntegerValues"] = list(value) if isinstance(value, list | tuple) else [value]
    return converted


def mturk_requirements(
    provider_type: str, shared_state: Any, types: QualificationTypes
) -> list[dict[str, Any]]:
    """The HIT type's QualificationRequirements for a run: ours (their MTurk types made
    and their grants mirrored) and the raw MTurk ones."""
    requirements = []
    for requirement in ours_for(provider_type, shared_state):
        name = requirement["qualification_name"]
        type_id = types.type_id(name)
        types.sync_grants(name)
        requirements.append(mturk_requirement(requirement, type_id))
    for raw in getattr(shared_state, "mturk_specific_qualifications", None) or []:
        entry = {k: raw[k] for k in _REQUIREMENT_KEYS if raw.get(k) is not None}
        if "QualificationTypeId" not in entry:  # Mephisto's shorthand: one of ours by name
            entry["QualificationTypeId"] = types.type_id(str(raw["qualification_name"]))
            if "Comparator" not in entry:
                entry["Comparator"] = raw.get("comparator", "Exists")
        if "ActionsGuarded" not in entry and "RequiredToPreview" not in entry:
            entry["ActionsGuarded"] = DEFAULT_ACTIONS_GUARDED
        requirements.append(entry)
    return requirements


class QualificationTypes:
    """Our qualifications as MTurk qualification types of one requester account."""

    def __init__(self, db: MephistoDB, provider_type: str, api: MTurkAPI) -> None:
        self.db = db
        self.provider_type = provider_type
        self.api = api

    def _key(self, name: str) -> str:
        return f"{self.api.profile}/{name}"

    def known_type_id(self, name: str) -> str | None:
        record = self.db.get_provider_record(self.provider_type, "qualification_type",
                                             self._key(name))
        return None if record is None else str(record["id"])

    def type_id(self, name: str) -> str:
        """The MTurk type mirroring our qualification `name`, made if need be."""
        known = self.known_type_id(name)
        if known is not None:
            return known
        doing = f"creating the MTurk qualification type {name!r}"
        try:
            created = self.api.client().create_qualification_type(
                Name=name, Description=f"Mephisto qualification {name}",
                QualificationTypeStatus="Active")
            type_id = str(created["QualificationType"]["QualificationTypeId"])
        except Exception as exc:
            if _NAME_TAKEN not in error_code(exc)[1].lower():
                raise self.api.error(exc, doing) from exc
            found = self._find_owned(name)  # made before, from another database
            if found is None:
                raise ProviderError(self.provider_type, (
                    f"{doing}: MTurk says the requester has one of this name, but does not "
                    "list it; rename the qualification")) from exc
            type_id = found
        self.db.put_provider_record(self.provider_type, "qualification_type", self._key(name),
                                    {"id": type_id})
        return type_id

    def _find_owned(self, name: str) -> str | None:
        token: str | None = None
        while True:
            page = self.api.call(
                "list_qualification_types", f"finding the qualification type {name!r}",
                Query=name, MustBeRequestable=False, MustBeOwnedByCaller=True, MaxResults=100,
                **({"NextToken": token} if token else {}))
            for qualification_type in page.get("QualificationTypes", []):
                if qualification_type.get("Name") == name:
                    return str(qualification_type["QualificationTypeId"])
            token = page.get("NextToken")
            if not token:
                return None

    # -- grants -------------------------------------------------------------------------

    def _grants_kind(self, name: str) -> str:
        return f"grants:{self._key(name)}"

    def grant(self, worker_name: str, name: str, value: int) -> None:
        type_id = self.type_id(name)
        self.api.call("associate_qualification_with_worker",
                      f"granting {name!r} to worker {worker_name}",
                      QualificationTypeId=type_id, WorkerId=worker_name, IntegerValue=int(value),
                      SendNotification=False)
        self.db.put_provider_record(self.provider_type, self._grants_kind(name), worker_name,
                                    {"value": int(value)})

    def revoke(self, worker_name: str, name: str) -> None:
        type_id = self.known_type_id(name)
        if type_id is None:  # never mirrored: nothing on MTurk to take back
            return
        self.api.call("disassociate_qualification_from_worker",
                      f"revoking {name!r} from worker {worker_name}",
                      QualificationTypeId=type_id, WorkerId=worker_name,
                      Reason=f"Mephisto qualification {name} revoked")
        self.db.delete_provider_record(self.provider_type, self._grants_kind(name), worker_name)

    def sync_grants(self, name: str) -> None:
        """Make the MTurk type's workers those of our grants of `name` (to this
        provider's workers): associate new and changed grants, take back revoked ones."""
        local = dict(self._local_grants(name))
        mirrored = {worker: int(v["value"]) for worker, v in
                    self.db.find_provider_records(self.provider_type,
                                                  self._grants_kind(name)).items()}
        changed = [(w, v) for w, v in local.items() if mirrored.get(w) != v]
        gone = [w for w in mirrored if w not in local]
        if changed or gone:
            logger.info("mirroring qualification %r on %s: %d grants, %d revocations",
                        name, self.provider_type, len(changed), len(gone))
        for worker_name, value in changed:
            self.grant(worker_name, name, value)
        for worker_name in gone:
            self.revoke(worker_name, name)

    def _local_grants(self, name: str) -> Iterable[tuple[str, int]]:
        found = self.db.find_qualifications(qualification_name=name)
        if not found:
            return []
        names = {w.db_id: w.worker_name for w in
                 self.db.find_workers(provider_type=self.provider_type)}
        return [(names[g.worker_id], int(g.value)) for g in
                self.db.check_granted_qualifications(qualification_id=found[0].db_id)
                if g.worker_id in names]
