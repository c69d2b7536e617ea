"""`mock`: a crowd provider with no crowd. Identity comes from the task URL
(`?worker_id=...&assignment_id=...`); launching and expiring do nothing remote; the
requester is created on first use. For local testing and demos.

A package only so that Mephisto's paths `mock.mock_provider` and `mock.provider_type`
(thin re-exports) can sit beside it; the plugin is this module."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mephisto.abstractions.crowd_provider import CrowdProvider, ProviderArgs
from mephisto.data_model.requester import Requester
from mephisto.errors import EntryAlreadyExists, MalformedRequest

if TYPE_CHECKING:
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
    PROVIDER_TYPE = PROVIDER_TYPE
    ArgsClass = MockProviderArgs

    def get_requester(self, db: MephistoDB, args: Any) -> Requester:
        name = str(args.provider.get("requester_name") or "MOCK_REQUESTER")
        found = db.find_requesters(requester_name=name)
        if found:
            return found[0]
        try:
            return Requester(db, db.new_requester(name, self.PROVIDER_TYPE))
        except EntryAlreadyExists:
            return db.find_requesters(requester_name=name)[0]

    def launch_units(self, units: list[Any], server_url: str) -> None:
        """Nothing to publish: workers open the server URL directly."""

    def expire_units(self, units: list[Any]) -> None:
        """Nothing to withdraw."""

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
