"""Workspaces, projects and participant groups: blocks and qualifications on Prolific.

Prolific filters studies on participant groups (`participant_group_blocklist`,
`participant_group_allowlist`), and a group's members can change after a study was
published, while the study's filters cannot. So each requester has one block group,
made before its first study and named in every study's blocklist; each mirrored
qualification has one group holding the workers granted it with a value other than 0
(a group holds members, not values: the value stays in our records).

Records: kind `workspace` (key `<requester>:<title>`), `project` (key
`<workspace id>:<title>`), `group` (key `<workspace id>:<group name>`): the ids on
Prolific; kind `qualification` (key `<worker id>:<qualification>`): the value granted.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mephisto.abstractions.providers.prolific.client import PROVIDER_TYPE, ProlificClient
from mephisto.errors import ProviderError

if TYPE_CHECKING:
    from mephisto.db.database import MephistoDB

BLOCKLIST, ALLOWLIST = "participant_group_blocklist", "participant_group_allowlist"


def block_group_name(requester_name: str) -> str:
    return f"Mephisto: blocked by {requester_name}"


def qualification_group_name(qualification_name: str) -> str:
    return f"Mephisto qualification: {qualification_name}"


class Groups:
    def __init__(self, db: MephistoDB) -> None:
        self.db = db

    def _cached(self, kind: str, key: str) -> str | None:
        found = self.db.get_provider_record(PROVIDER_TYPE, kind, key)
        return None if found is None else str(found["id"])

    def _remember(self, kind: str, key: str, found_id: str) -> str:
        self.db.put_provider_record(PROVIDER_TYPE, kind, key, {"id": found_id})
        return found_id

    def workspace_id(self, client: ProlificClient, requester_name: str, title: str) -> str:
        key = f"{requester_name}:{title}"
        cached = self._cached("workspace", key)
        if cached is not None:
            return cached
        workspaces = client.list_all("workspaces/")
        found = [w["id"] for w in workspaces if w.get("title") == title]
        if not found:
            titles = ", ".join(repr(w.get("title")) for w in workspaces) or "none"
            raise ProviderError(
                PROVIDER_TYPE, f"no workspace titled {title!r} for requester "
                f"{requester_name} (its workspaces: {titles}): set "
                "mephisto.provider.prolific_workspace_name to one of them")
        return self._remember("workspace", key, str(found[0]))

    def project_id(self, client: ProlificClient, workspace_id: str, title: str) -> str:
        """The workspace's project titled `title`, created if missing."""
        key = f"{workspace_id}:{title}"
        cached = self._cached("project", key)
        if cached is not None:
            return cached
        path = f"workspaces/{workspace_id}/projects/"
        found = [p["id"] for p in client.list_all(path) if p.get("title") == title]
        made = found[0] if found else client.post(path, {"title": title})["id"]
        return self._remember("project", key, str(made))

    def group_id(self, client: ProlificClient, workspace_id: str, name: str) -> str:
        """The workspace's participant group called `name`, created if missing."""
        key = f"{workspace_id}:{name}"
        cached = self._cached("group", key)
        if cached is not None:
            return cached
        groups = client.list_all("participant-groups/", {"workspace_id": workspace_id})
        found = [g["id"] for g in groups if g.get("name") == name and not g.get("is_deleted")]
        made = found[0] if found else client.post(
            "participant-groups/",
            {"name": name, "workspace_id": workspace_id,
             "description": "Kept by Mephisto: change it through Mephisto, not here."},
        )["id"]
        return self._remember("group", key, str(made))

    @staticmethod
    def add(client: ProlificClient, group_id: str, participant_ids: list[str]) -> None:
        """Add participants (members already in are left as they are)."""
        client.post(f"participant-groups/{group_id}/participants/",
                    {"participant_ids": participant_ids})

    @staticmethod
    def remove(client: ProlificClient, group_id: str, participant_ids: list[str]) -> None:
        client.delete(f"participant-groups/{group_id}/participants/",
                      {"participant_ids": participant_ids})

    # -- qualifications -----------------------------------------------------------------

    def granted(self, worker_id: str, qualification_name: str) -> int | None:
        found = self.db.get_provider_record(PROVIDER_TYPE, "qualification",
                                            f"{worker_id}:{qualification_name}")
        return None if found is None else int(found["value"])

    def set_granted(self, worker_id: str, qualification_name: str, value: int | None) -> None:
        key = f"{worker_id}:{qualification_name}"
        if value is None:
            self.db.delete_provider_record(PROVIDER_TYPE, "qualification", key)
        else:
            self.db.put_provider_record(PROVIDER_TYPE, "qualification", key, {"value": value})


def group_filter(filter_id: str, group_ids: list[str]) -> list[dict[str, Any]]:
    return [{"filter_id": filter_id, "selected_values": group_ids}] if group_ids else []
