"""The crowd provider contract: who the workers are and how they are paid.

A provider declares `PROVIDER_TYPE` and an `ArgsClass` (dataclass, the
`mephisto.provider.*` config). It acts on the plain data-model entities and keeps what
it needs in its own tables. Calls that reach a remote API may block: the operations
layer runs them in a thread pool. Methods take lists so a launch is one call, not one
per unit. To implement one, override:

- `get_requester(db, args)`: the `Requester` to launch as (created on demand if the
  provider allows it, e.g. the mock).
- `setup_resources_for_task_run(task_run, args, shared_state, server_url)` and
  `cleanup_resources_from_task_run(task_run, server_url)`.
- `launch_units(units, server_url)` / `expire_units(units)`: publish and withdraw work.
- `worker_name_from_registration(provider_data)`: the provider's id of the worker in a
  `/request_agent` body, or raise `MalformedRequest`.
- `worker_name_from_request(caller)`: the provider's id of the worker that a request's
  query parameters name (what the page shim adds to every request), or None. The
  operator refuses a request naming one worker to act on another worker's agent.
- `wrap_crowd_source_js()`: the script served as `/wrap_crowd_source.js`.
- `approve_work`, `reject_work`, `soft_reject_work`, `pay_bonus`, `block_worker`,
  `unblock_worker`, `grant_qualification`, `revoke_qualification`: the provider-side
  effects of review decisions (the database records are the caller's).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from mephisto.db.database import MephistoDB


@dataclass
class ProviderArgs:
    """Arguments every provider takes (`mephisto.provider.*`)."""

    _provider_type: str = "???"
    requester_name: str = field(default="???", metadata={"help": "Requester to launch as."})


class CrowdProvider:
    PROVIDER_TYPE: ClassVar[str | None] = None
    ArgsClass: ClassVar[type[Any]] = ProviderArgs

    def __init__(self, db: MephistoDB, args: Any = None) -> None:
        self.db = db
        self.args = args

    @classmethod
    def assert_task_args(cls, args: Any, shared_state: Any) -> None:
        """Raise `ConfigError` for provider configuration that cannot work."""

    def get_requester(self, db: MephistoDB, args: Any) -> Any:
        raise NotImplementedError

    def setup_resources_for_task_run(
        self, task_run: Any, args: Any, shared_state: Any, server_url: str
    ) -> None:
        """Prepare provider-side resources (e.g. qualifications, HIT types)."""

    def cleanup_resources_from_task_run(self, task_run: Any, server_url: str) -> None:
        """Release what `setup_resources_for_task_run` made."""

    def launch_units(self, units: list[Any], server_url: str) -> None:
        raise NotImplementedError

    def expire_units(self, units: list[Any]) -> None:
        raise NotImplementedError

    def worker_name_from_registration(self, provider_data: dict[str, Any]) -> str:
        raise NotImplementedError

    def worker_name_from_request(self, caller: Mapping[str, str]) -> str | None:
        """The worker a request says it comes from (None: it names none)."""
        return None

    def wrap_crowd_source_js(self) -> str:
        raise NotImplementedError

    # review effects: no-ops unless the provider pays or notifies
    def approve_work(self, agent: Any, review_note: str | None = None) -> None:
        """Pay / approve on the provider."""

    def reject_work(self, agent: Any, reason: str | None = None) -> None:
        """Reject on the provider."""

    def soft_reject_work(self, agent: Any) -> None:
        """Soft-reject: pay but record the worker as unsuitable."""

    def pay_bonus(self, worker: Any, amount: float, reason: str, unit: Any = None) -> None:
        raise NotImplementedError(f"{self.PROVIDER_TYPE} cannot pay bonuses")

    def block_worker(self, worker: Any, reason: str) -> None:
        """Block on the provider, where it supports that."""

    def unblock_worker(self, worker: Any, reason: str) -> None:
        """Undo `block_worker`."""
