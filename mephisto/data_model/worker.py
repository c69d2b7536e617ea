"""A worker: one person, as known to one crowd provider, across all their work."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mephisto.data_model.entity import Entity
from mephisto.errors import EntryDoesNotExist, MephistoError

if TYPE_CHECKING:
    from mephisto.data_model.agent import Agent
    from mephisto.data_model.qualification import GrantedQualification
    from mephisto.data_model.requester import Requester
    from mephisto.data_model.unit import Unit


class Worker(Entity):
    _getter = "get_worker"
    worker_name: str
    provider_type: str

    def _qualification_id(self, qualification_name: str) -> str:
        found = self.db.find_qualifications(qualification_name=qualification_name)
        if not found:
            raise EntryDoesNotExist(
                f"qualification {qualification_name!r} does not exist; create it with "
                "db.make_qualification() (or `mephisto qualifications grant NAME WORKER "
                "--create`) first"
            )
        return str(found[0].db_id)

    def get_granted_qualification(self, qualification_name: str) -> GrantedQualification | None:
        found = self.db.find_qualifications(qualification_name=qualification_name)
        if not found:
            return None
        grants = self.db.check_granted_qualifications(
            qualification_id=found[0].db_id, worker_id=self.db_id
        )
        return grants[0] if grants else None

    def is_qualified(self, qualification_name: str) -> bool:
        """Granted the qualification with a non-zero value."""
        grant = self.get_granted_qualification(qualification_name)
        return grant is not None and bool(grant.value)

    def is_disqualified(self, qualification_name: str) -> bool:
        """Granted the qualification with value 0 (e.g. failed onboarding)."""
        grant = self.get_granted_qualification(qualification_name)
        return grant is not None and grant.value == 0

    def grant_qualification(self, qualification_name: str, value: int = 1) -> None:
        self.db.grant_qualification(self._qualification_id(qualification_name), self.db_id, value)

    def revoke_qualification(self, qualification_name: str) -> None:
        self.db.revoke_qualification(self._qualification_id(qualification_name), self.db_id)

    def get_granted_qualifications(self) -> dict[str, int]:
        """Every qualification this worker holds, by name."""
        names = {q.db_id: q.qualification_name for q in self.db.find_qualifications()}
        return {
            names[g.qualification_id]: g.value
            for g in self.db.check_granted_qualifications(worker_id=self.db_id)
        }

    def is_blocked(self, requester: Requester | None = None) -> bool:
        """Blocked by this requester (or by any requester when None)."""
        return self.db.is_worker_blocked(self.db_id, None if requester is None else requester.db_id)

    def block_worker(
        self, reason: str, unit: Unit | None = None, requester: Requester | None = None
    ) -> None:
        requester_id = _requester_id(unit, requester)
        self.db.block_worker(self.db_id, requester_id, reason)

    def unblock_worker(self, reason: str, requester: Requester) -> None:
        self.db.unblock_worker(self.db_id, requester.db_id)

    def get_agents(self, status: str | None = None) -> list[Agent]:
        return self.db.find_agents(worker_id=self.db_id, status=status)


def _requester_id(unit: Any, requester: Any) -> str:
    if requester is not None:
        return str(requester.db_id)
    if unit is not None:
        return str(unit.requester_id)
    raise MephistoError("block_worker needs a unit or a requester")
