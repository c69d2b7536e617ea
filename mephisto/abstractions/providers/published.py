"""What a provider without a third party "published": a log of launch and expiry calls.

The mock and in-house providers publish nothing remote, yet must say which units are
open (`open_units`, also in a new process after a crash). One record per call keeps a
launch of 100,000 units one write; the open units are the calls replayed in order.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mephisto.db.database import MephistoDB

KIND = "units"  # the provider records' kind


def record_units(db: MephistoDB, provider_type: str, event: str, unit_ids: Iterable[str]) -> None:
    """Log a call: `event` is "launched" or "expired"."""
    ids = [str(u) for u in unit_ids]
    if ids:
        key = f"{time.time_ns():020d}-{secrets.token_hex(4)}"  # sorts in call order
        db.put_provider_record(provider_type, KIND, key, {"event": event, "units": ids})


def open_unit_ids(db: MephistoDB, provider_type: str, task_run_id: str) -> list[str]:
    """The run's units launched and not expired since, lowest id first."""
    open_ids: set[str] = set()
    for record in db.find_provider_records(provider_type, KIND).values():
        if record["event"] == "launched":
            open_ids.update(record["units"])
        else:
            open_ids.difference_update(record["units"])
    of_run = {u.db_id for u in db.find_units(task_run_id=task_run_id)}
    return sorted(open_ids & of_run, key=int)
